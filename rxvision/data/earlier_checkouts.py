"""Shards that an earlier checkout on this host verified already.

A snapshot keeps last night's unchanged shards as the same DVC objects, and a checkout's
shards are hard links into the DVC cache. So tonight's checkout holds, for most shards,
the very file (same device, inode, size and modification time) that last night's
checkout read and hashed image by image. Such a shard, when it holds the same images
(path, sha256, size) in both indexes, is not read and hashed again: its images' offsets
are taken from last night's record. This trusts the local disk as a held checkout is
trusted (``SnapshotStore.checkout`` keeps one without reading it again); a shard fetched
tonight, or copied rather than linked, is a new file and is verified.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from rxvision.data.packed_snapshot import LOCATIONS_FILE, PackedSnapshot
from rxvision.data.snapshot_shards import MARKER_FILE, IndexEntry
from rxvision.errors import SnapshotError

log = logging.getLogger(__name__)

FileKey = tuple[int, int, int, int]


def file_key(path: Path) -> FileKey:
    """What makes a file the same file: device, inode, size, modification time."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def earlier_checkouts(out: Path) -> list[PackedSnapshot]:
    """The verified checkouts beside ``out`` (a marker and a location record each);
    staging folders (hidden) and ``out`` itself are left out."""
    if not out.parent.is_dir():
        return []
    return [
        PackedSnapshot(path)
        for path in sorted(out.parent.iterdir())
        if path != out
        and not path.name.startswith(".")
        and (path / MARKER_FILE).is_file()
        and (path / LOCATIONS_FILE).is_file()
    ]


def shards_verified_before(
    packed: PackedSnapshot, earlier: Iterable[PackedSnapshot]
) -> dict[int, dict[str, int]]:
    """Each shard of ``packed`` that one of ``earlier`` verified as the same file with the
    same images: its images' offsets by path. An earlier checkout that cannot be read
    (pruned meanwhile, a damaged record) is passed over: its shards get verified."""
    mine = packed.shards()
    wanted: dict[FileKey, int] = {}
    for shard in mine:
        try:
            wanted[file_key(packed.shard_path(shard))] = shard
        except OSError:
            continue  # missing: the verification names it
    found: dict[int, dict[str, int]] = {}
    for other in earlier:
        try:
            found.update(_same_files(other, mine, wanted, found))
        except (OSError, SnapshotError, ValueError) as exc:
            log.info("%s not used to skip verification: %s", other.dataset, exc)
    return found


def _same_files(
    other: PackedSnapshot,
    mine: dict[int, dict[str, IndexEntry]],
    wanted: dict[FileKey, int],
    found: dict[int, dict[str, int]],
) -> dict[int, dict[str, int]]:
    offsets = other.recorded_offsets
    if offsets is None:
        return {}
    matched: dict[int, dict[str, int]] = {}
    for shard, expected in other.shards().items():
        path = other.shard_path(shard)
        ours = wanted.get(file_key(path)) if path.is_file() else None
        if ours is None or ours in found or not same_images(mine[ours], expected):
            continue
        matched[ours] = {p: offsets[p] for p in expected}
    return matched


def same_images(a: dict[str, IndexEntry], b: dict[str, IndexEntry]) -> bool:
    """Whether two shards' index entries name the same images (path, sha256, size)."""
    return a.keys() == b.keys() and all(
        a[p].sha256 == b[p].sha256 and a[p].size == b[p].size for p in a
    )
