"""The walk of a snapshot read in place: every image of its index, located in its tar
shard (``rxvision.data.packed_snapshot``), so that the validator decodes each from its
byte range and no file per image is ever written.

A snapshot is a flat ImageFolder (``<class>/<image>``: split layouts are refused when it
is created) and holds only what its index names: a shard whose tar headers differ from
the index is refused by name (``SnapshotError``) before any of its images is read. A
checkout's images are located from the record its verification kept, and each image's
bytes are checked against the index's sha256 as they are decoded.
"""

from __future__ import annotations

from collections.abc import Container, Iterator

from rxvision.data.packed_snapshot import PackedSnapshot
from rxvision.data.validation.report import FileIssue
from rxvision.data.validation.walk import WalkEntry


class PackedWalk:
    """A ``FileWalk`` over a fetched snapshot's shards, one shard's members at a time."""

    layout = "flat"
    splits: tuple[str, ...] = ()

    def __init__(self, packed: PackedSnapshot, known: Container[str] = frozenset()) -> None:
        """``known``: the sha256s whose facts the scan holds already. A shard whose every
        image is known is not opened: none of its images will be read, so its entries
        carry no byte offset (-1: a read of one fails, never returns other bytes)."""
        self.packed = packed
        self.known = known
        self.classes: dict[str | None, list[str]] = {}
        self.ignored: list[FileIssue] = []

    def files(self) -> Iterator[WalkEntry]:
        """Every image of the snapshot, shard by shard, in each shard's order."""
        by_shard = self.packed.shards()
        self.classes[None] = sorted(
            {e.label for shard in by_shard.values() for e in shard.values()}
        )
        for shard, expected in sorted(by_shard.items()):
            if all(entry.sha256 in self.known for entry in expected.values()):
                file = str(self.packed.shard_path(shard))
                for e in sorted(expected.values(), key=lambda e: e.path):
                    yield WalkEntry(file, e.path, e.label, None, -1, e.size)
                continue
            for image in self.packed.shard_images(shard, expected):
                yield WalkEntry(image.file, image.path, image.label, None, image.offset, image.size)

    def digests(self) -> dict[str, str]:
        """Each image's sha256 by path, as the index gives it."""
        return {entry.path: entry.sha256 for entry in self.packed.entries}
