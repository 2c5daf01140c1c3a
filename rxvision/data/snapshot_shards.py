"""A snapshot's contents: the index of its images (path, label, sha256, size, shard and
the byte offset in it) and the deterministic tar shards they are packed into (about 1,000
images each), so a pull moves a few large objects instead of one per image. Sorted
members and fixed metadata: the same members always give the same shard bytes, the same
hashes; a new snapshot keeps the unchanged shards of the one before it
(``assign_shards``), so a host that holds last night's objects fetches only what
changed."""

from __future__ import annotations

import hashlib
import io
import itertools
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rxvision.errors import SnapshotError

# rows of the index read at a time (memory: one batch's Arrow buffers, not the table's)
INDEX_BATCH = 8192
# written in a pulled snapshot's folder once every file is verified
MARKER_FILE = ".rxvision-snapshot.json"
# the snapshot's index beside it: what each pulled file must hash to
PULLED_INDEX_FILE = ".rxvision-index.parquet"
# files of a folder that are not images of the snapshot
SKIPPED_NAMES = {"manifest.parquet", "manifest.csv", MARKER_FILE, PULLED_INDEX_FILE}
DEFAULT_SHARD_SIZE = 1000

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One image of a snapshot."""

    path: str
    label: str
    sha256: str
    size: int
    shard: int = -1
    # where the image's bytes start in its shard, recorded by the packer (-1: unknown, an
    # index made before offsets were kept: readers then parse the shard's tar headers)
    offset: int = -1


# --- indexing ---------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """The file's SHA-256 (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def index_directory(data_dir: Path, exclude: Iterable[str] = ()) -> list[IndexEntry]:
    """Every image of an ImageFolder directory, sorted by path, minus ``exclude``.

    A file outside a class folder is refused by name: it has no label.
    """
    if not data_dir.is_dir():
        raise SnapshotError(f"not a directory: {data_dir}")
    skip = set(exclude)
    entries = []
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(data_dir).as_posix()
        if path.name in SKIPPED_NAMES or any(part.startswith(".") for part in rel.split("/")):
            continue
        if rel in skip:
            continue
        if "/" not in rel:
            raise SnapshotError(
                f"{data_dir / rel}: file outside a class folder (expected DIR/<product>/<image>)"
            )
        entries.append(
            IndexEntry(rel, rel.split("/", 1)[0], sha256_file(path), path.stat().st_size)
        )
    if not entries:
        raise SnapshotError(f"no images under {data_dir}")
    return entries


def content_hash(entries: Iterable[IndexEntry]) -> str:
    """A hash of (path, sha256) of every image: equal content gives an equal hash."""
    digest = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.path):
        digest.update(f"{e.path}\t{e.sha256}\n".encode())
    return digest.hexdigest()


def assign_shards(
    entries: list[IndexEntry], shard_size: int, previous: Iterable[IndexEntry] = ()
) -> tuple[list[IndexEntry], int]:
    """Give each image its shard number; return the entries in path order and how many
    shards of ``previous`` (the last snapshot's index) they keep.

    A previous shard is kept whole when every image of it is still here unchanged (same
    path, same sha256) and it is at least half full: it is written again with the same
    members in the same order, so its bytes, and DVC's object, are the same, and a host
    that holds last night's snapshot fetches only the other shards. New images and the
    images of every other shard (one that lost or changed an image, or a small one, so
    small shards merge instead of piling up) are packed in path order into new shards.
    Without ``previous`` every shard is new: images in path order.
    """
    current = {e.path: e for e in entries}
    members: dict[int, list[IndexEntry]] = {}
    for e in previous:
        members.setdefault(e.shard, []).append(e)
    kept: list[list[IndexEntry]] = [
        group
        for _, group in sorted(members.items())
        if shard_size <= 2 * len(group) <= 2 * shard_size
        and all(e.path in current and current[e.path].sha256 == e.sha256 for e in group)
    ]
    placed = {e.path for group in kept for e in group}
    rest = sorted((e for e in entries if e.path not in placed), key=lambda e: e.path)
    groups = [sorted(group, key=lambda e: e.path) for group in kept]
    groups += [rest[i : i + shard_size] for i in range(0, len(rest), shard_size)]
    numbered = [
        IndexEntry(e.path, e.label, e.sha256, e.size, shard)
        for shard, group in enumerate(groups)
        for e in group
    ]
    return sorted(numbered, key=lambda e: e.path), len(kept)


# --- packing ----------------------------------------------------------------------------


def shard_name(shard: int) -> str:
    """File name of a shard."""
    return f"shard-{shard:05d}.tar"


def write_shards(
    data_dir: Path, entries: list[IndexEntry], out_dir: Path, progress: Progress | None = None
) -> list[IndexEntry]:
    """Pack the images into deterministic tar shards under ``out_dir``; return the
    entries, in their order, each with its byte offset in its shard (what the index
    records, so a reader locates every image without parsing the tar headers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_shard: dict[int, list[IndexEntry]] = {}
    for e in entries:
        by_shard.setdefault(e.shard, []).append(e)
    offsets: dict[str, int] = {}
    for shard, members in sorted(by_shard.items()):
        with (
            (out_dir / shard_name(shard)).open("wb") as fh,
            tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for e in members:
                data = (data_dir / e.path).read_bytes()
                if hashlib.sha256(data).hexdigest() != e.sha256:
                    raise SnapshotError(f"{data_dir / e.path} changed while being snapshotted")
                tar.addfile(_tar_info(e.path, len(data)), io.BytesIO(data))
                # the member's data ends where the file is now, padded to a whole block
                offsets[e.path] = fh.tell() - padded_to_block(len(data))
        if progress:
            progress("pack", len(offsets), len(entries))
    return [replace(e, offset=offsets[e.path]) for e in entries]


def padded_to_block(size: int) -> int:
    """``size`` bytes rounded up to whole tar blocks (512 bytes)."""
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def packed_shard_size(data_end: int) -> int:
    """The size of a shard ``tarfile`` wrote whose last member's data ends at byte
    ``data_end``: that data padded to a block, the two zero blocks that end an archive,
    then padding to a whole record (``tarfile.RECORDSIZE``)."""
    end = padded_to_block(data_end) + 2 * tarfile.BLOCKSIZE
    return -(-end // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    # Fixed metadata: the same images always give byte-identical shards.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_index(entries: list[IndexEntry], path: Path) -> None:
    """The snapshot's index as Parquet."""
    table = pa.Table.from_pylist([asdict(e) for e in entries])
    pq.write_table(table, path)


def _in_field_order(by_name: dict[str, list[Any]], path: Path) -> list[list[Any]]:
    """An index batch's columns in ``IndexEntry``'s field order, defaults filled in;
    ``SnapshotError`` names a column this version does not know or one it lacks."""
    known = {f.name: f for f in fields(IndexEntry)}
    unknown = sorted(set(by_name) - set(known))
    missing = sorted(n for n, f in known.items() if n not in by_name and f.default is MISSING)
    if unknown or missing:
        raise SnapshotError(f"{path}: index columns unknown {unknown}, missing {missing}")
    rows = len(next(iter(by_name.values()), []))
    return [by_name[n] if n in by_name else [f.default] * rows for n, f in known.items()]


def parquet_batches(path: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The record batches of a per-image Parquet file (an index, a locations record),
    decoded in this thread, the Arrow pool's freed pages handed back at the end.

    Reading the whole table at once, or on Arrow's reader threads, left its decode
    buffers in Arrow's pool (mimalloc): at 100,000 images reading the index grew the
    process by 76-82 MB, the locations record by 52 MB; batch by batch in this thread,
    by 34 and 20 MB, no slower (RSS, measured)."""
    try:
        yield from pq.ParquetFile(path).iter_batches(
            batch_size=INDEX_BATCH, columns=columns, use_threads=False
        )
    finally:
        pa.default_memory_pool().release_unused()


def read_index(path: Path) -> list[IndexEntry]:
    """Read an ``index.parquet`` batch by batch, column by column, each class name one
    shared string (``parquet_batches``: the memory follows the entries, not the file)."""
    entries: list[IndexEntry] = []
    for batch in parquet_batches(path):
        by_name = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        if "label" in by_name:
            by_name["label"] = [sys.intern(label) for label in by_name["label"]]
        # positional, in the fields' order: keywords per row cost ~0.65 us more each
        columns = _in_field_order(by_name, path)
        entries.extend(itertools.starmap(IndexEntry, zip(*columns, strict=True)))
    return entries
