"""A fetched snapshot read in place: its tar shards and index as DVC checked them out,
each image located by its byte range inside a shard, never unpacked to its own file.

Every shard is checked against the index before any of it is used: a member the index
does not name, one whose size differs, or one missing is refused, naming the shard. The
bytes are checked by their reader (each image's sha256 travels with its location).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

from rxvision.data.snapshot_shards import IndexEntry, Progress, read_index, shard_name
from rxvision.data.source_image import SourceImage
from rxvision.errors import SnapshotError

SHARDS_DIR = "shards"
INDEX_FILE = "index.parquet"


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

    def shard_images(self, shard: int, expected: dict[str, IndexEntry]) -> list[SourceImage]:
        """Where each image of one shard lies in its file, checked against the index."""
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
        blob = memoryview(self.shard_path(shard).read_bytes())
        for image in self.shard_images(shard, expected):
            data = blob[image.offset : image.offset + image.size]
            if hashlib.sha256(data).hexdigest() != image.sha256:
                raise SnapshotError(f"{image.path}: hash differs from the index")
            yield image, data

    def verify(self, progress: Progress | None = None) -> int:
        """Check every image's bytes against the index's sha256, shards in parallel (the
        hashing releases the GIL); ``SnapshotError`` names the first image that differs.
        Returns the number of images checked."""
        by_shard = self.shards()
        total = sum(len(expected) for expected in by_shard.values())

        def check(shard: int) -> int:
            return sum(1 for _ in self.verified_images(shard, by_shard[shard]))

        done = 0
        threads = min(4, os.cpu_count() or 1, len(by_shard) or 1)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for count in pool.map(check, sorted(by_shard)):
                done += count
                if progress:
                    progress("verify", done, total)
        return done
