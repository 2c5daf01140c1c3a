"""A fetched snapshot read in place: its tar shards and index as DVC checked them out,
each image located by its byte range inside a shard, never unpacked to its own file.

Every shard is checked against the index before any of it is used. An index made since
the packer records offsets locates each image itself: the shard must then end as the
packer wrote it (zeros after its last image, to the length ``tarfile`` gives: a member
appended, or the end cut, shows there). An older index has no offsets: the shard's tar
headers are parsed, and a member the index does not name, one whose size differs, or
one missing is refused, naming the shard. Either way the bytes are checked by their
reader (each image's sha256 travels with its location), so an offset that points
elsewhere is refused, naming the image.

Parsing the headers (Python's ``tarfile``, holding the GIL) was a tenth of a pull's time
and a fifth of a checkout's at 10,000 images, two fifths of a checkout's at 100,000
(measured). For such older indexes a checkout (``SnapshotStore.checkout``) records where
each image lies once its verification has read every shard's headers
(``LOCATIONS_FILE``): the validator, preprocessing and registration then locate the
images from it instead of parsing the headers again.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import tarfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rxvision.data.snapshot_shards import (
    IndexEntry,
    Progress,
    packed_shard_size,
    parquet_batches,
    read_index,
    shard_name,
)
from rxvision.data.source_image import SourceImage
from rxvision.errors import SnapshotError

SHARDS_DIR = "shards"
INDEX_FILE = "index.parquet"
# each image's byte offset in its shard, in the index's order, written by a checkout's
# verification (hidden: not part of the snapshot's DVC content)
LOCATIONS_FILE = ".rxvision-locations.parquet"
LOCATION_COLUMNS = ("path", "offset")


def map_shard(path: Path) -> memoryview:
    """The bytes of shard file ``path``, mapped read-only rather than read into the heap:
    at 100,000 images the pull's process held ~30 MB more after its shards were read into
    bytes (each freed one left heap behind; measured), while a mapping is returned whole
    when its last slice goes."""
    try:
        with path.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return memoryview(b"")  # an empty file cannot be mapped
            return memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read shard: {exc}") from exc


class PackedSnapshot:
    """The shards and ``index.parquet`` under ``dataset`` (a snapshot's DVC folder)."""

    def __init__(self, dataset: Path) -> None:
        self.dataset = dataset

    @cached_property
    def entries(self) -> list[IndexEntry]:
        """The index: every image's path, label, sha256, size and shard, in path order."""
        return read_index(self.dataset / INDEX_FILE)

    def shard_path(self, shard: int) -> Path:
        """The local file of shard number ``shard``."""
        return self.dataset / SHARDS_DIR / shard_name(shard)

    def shards(self) -> dict[int, dict[str, IndexEntry]]:
        """The index's entries by shard number, then by path."""
        by_shard: dict[int, dict[str, IndexEntry]] = {}
        for entry in self.entries:
            by_shard.setdefault(entry.shard, {})[entry.path] = entry
        return by_shard

    @cached_property
    def recorded_offsets(self) -> dict[str, int] | None:
        """Each image's offset in its shard by path, as the checkout's verification
        recorded them; None when there is no record (a folder DVC fetched, or a checkout
        made before records were kept). A record that does not match the index is refused."""
        path = self.dataset / LOCATIONS_FILE
        if not path.is_file():
            return None
        paths: list[str] = []
        offsets: list[int] = []
        try:
            for batch in parquet_batches(path, list(LOCATION_COLUMNS)):
                # Arrow's batch reader skips a requested column the file lacks
                missing = [name for name in LOCATION_COLUMNS if name not in batch.schema.names]
                if missing:
                    raise SnapshotError(
                        f"{path}: no {', '.join(missing)} column in the locations record: "
                        "check it out again"
                    )
                paths += batch.column("path").to_pylist()
                offsets += batch.column("offset").to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise SnapshotError(
                f"{path}: unreadable locations record ({exc}): check it out again"
            ) from exc
        if paths != [entry.path for entry in self.entries]:
            raise SnapshotError(f"{path}: does not list the index's images: check it out again")
        return dict(zip(paths, offsets, strict=True))

    def indexed_shard_images(
        self, shard: int, expected: dict[str, IndexEntry], blob: memoryview | None = None
    ) -> list[SourceImage] | None:
        """Where each image of one shard lies, in path order, from the offsets the index
        records (the packer's), after checking that the shard ends as the packer ended it
        (``blob``: its bytes, when mapped already); None when the index has no offsets
        (made before they were recorded)."""
        if not expected or any(e.offset < 0 for e in expected.values()):
            return None
        path = self.shard_path(shard)
        file = str(path)
        images = [
            SourceImage(e.path, e.label, file, e.offset, e.size, e.sha256)
            for e in sorted(expected.values(), key=lambda e: e.path)
        ]
        end = max(image.offset + image.size for image in images)
        tail_size = packed_shard_size(end) - end
        # one byte more than expected: enough to tell a longer shard, never a large read
        tail = bytes(blob[end : end + tail_size + 1]) if blob is not None else None
        if tail is None:
            try:
                with path.open("rb") as fh:
                    fh.seek(end)
                    tail = fh.read(tail_size + 1)
            except OSError as exc:
                raise SnapshotError(f"{path}: cannot read shard: {exc}") from exc
        # after the last image: its padding, the archive's end and the record's, all zero
        # (a member appended, or the end cut, shows here; each image's bytes are hashed)
        if len(tail) != tail_size or tail.strip(b"\0"):
            raise SnapshotError(
                f"{path}: does not end as the packer wrote it after its images (at byte "
                f"{end}): not the shard the index was made with"
            )
        return images

    def shard_images(self, shard: int, expected: dict[str, IndexEntry]) -> list[SourceImage]:
        """Where each image of one shard lies in its file: from the index's offsets, else
        from the checkout's record when there is one, else from the shard's tar headers
        checked against the index."""
        indexed = self.indexed_shard_images(shard, expected)
        if indexed is not None:
            return indexed
        offsets = self.recorded_offsets
        if offsets is None:
            return self.parsed_shard_images(shard, expected)
        path = self.shard_path(shard)
        file = str(path)
        images = [
            SourceImage(e.path, e.label, file, offsets[e.path], e.size, e.sha256)
            for e in sorted(expected.values(), key=lambda e: e.path)
        ]
        # a shard cut short is the checkout's damage, refused by name (not a bad image)
        end = max((image.offset + image.size for image in images), default=0)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise SnapshotError(f"{path}: cannot read shard: {exc}") from exc
        if size < end:
            raise SnapshotError(f"{path}: {size} bytes, its images end at byte {end}")
        return images

    def parsed_shard_images(self, shard: int, expected: dict[str, IndexEntry]) -> list[SourceImage]:
        """Where each image of one shard lies, read from its tar headers, each member
        checked against the index (name, kind, size, count)."""
        path = self.shard_path(shard)
        file = str(path)  # one string for the shard's images, not one each
        images = []
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    entry = expected.get(member.name)
                    if entry is None or not member.isfile():
                        raise SnapshotError(f"{path}: unexpected member {member.name!r}")
                    if member.size != entry.size:
                        raise SnapshotError(
                            f"{path}: {member.name} is {member.size} bytes, "
                            f"the index says {entry.size}"
                        )
                    images.append(
                        SourceImage(
                            entry.path,
                            entry.label,
                            file,
                            member.offset_data,
                            member.size,
                            entry.sha256,
                        )
                    )
        except (OSError, tarfile.TarError) as exc:
            raise SnapshotError(f"{path}: cannot read shard: {exc}") from exc
        if len(images) != len(expected):
            raise SnapshotError(f"{path}: {len(images)} files, the index says {len(expected)}")
        return images

    def images(self) -> list[SourceImage]:
        """Every image of the snapshot, in path order, located in its shard."""
        located = [
            image
            for shard, expected in sorted(self.shards().items())
            for image in self.shard_images(shard, expected)
        ]
        return sorted(located, key=lambda image: image.path)

    def verified_images(
        self, shard: int, expected: dict[str, IndexEntry]
    ) -> Iterator[tuple[SourceImage, memoryview]]:
        """Each image of one shard with its bytes, checked against the index's sha256
        first (``SnapshotError`` names the image that differs)."""
        blob = map_shard(self.shard_path(shard))
        located = self.indexed_shard_images(shard, expected, blob)
        if located is None:
            located = self.parsed_shard_images(shard, expected)
        for image in located:
            data = blob[image.offset : image.offset + image.size]
            if hashlib.sha256(data).hexdigest() != image.sha256:
                raise SnapshotError(f"{image.path}: hash differs from the index")
            yield image, data

    def verify(
        self,
        progress: Progress | None = None,
        *,
        record: bool = False,
        verified: Mapping[int, dict[str, int]] | None = None,
    ) -> int:
        """Check every image's bytes against the index's sha256, shards in parallel (the
        hashing releases the GIL); ``SnapshotError`` names the first image that differs.
        ``verified``: shards checked already (each image's offset by path: an earlier
        checkout's, of the very same file, ``earlier_checkouts``), not read again. With
        ``record``, each image's offset is then written to ``LOCATIONS_FILE`` for later
        readers. Returns the number of images checked or taken as checked."""
        by_shard = self.shards()
        total = sum(len(expected) for expected in by_shard.values())
        offsets: dict[str, int] = {}
        for shard, found in (verified or {}).items():
            if found.keys() != by_shard.get(shard, {}).keys():
                raise SnapshotError(f"{self.shard_path(shard)}: verified before as other images")
            offsets.update(found)

        def check(shard: int) -> dict[str, int]:
            return {i.path: i.offset for i, _ in self.verified_images(shard, by_shard[shard])}

        todo = sorted(set(by_shard) - set(verified or {}))
        threads = min(4, os.cpu_count() or 1, len(todo) or 1)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for found in pool.map(check, todo):
                offsets.update(found)
                if progress:
                    progress("verify", len(offsets), total)
        if record:
            self._write_locations(offsets)
        return len(offsets)

    def _write_locations(self, offsets: dict[str, int]) -> None:
        paths = [entry.path for entry in self.entries]
        table = pa.table(
            {"path": paths, "offset": pa.array([offsets[p] for p in paths], pa.int64())}
        )
        # written beside, then renamed: a reader never meets half a record
        partial = self.dataset / f"{LOCATIONS_FILE}.partial"
        pq.write_table(table, partial)
        partial.replace(self.dataset / LOCATIONS_FILE)
        self.__dict__.pop("recorded_offsets", None)
