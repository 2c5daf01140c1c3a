"""A checkout skips hashing the shards that an earlier checkout on this host verified as
the very same files, and only those: a copy, another image list or a vanished record
gets verified."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rxvision.data.earlier_checkouts import earlier_checkouts, shards_verified_before
from rxvision.data.packed_snapshot import INDEX_FILE, LOCATIONS_FILE, SHARDS_DIR, PackedSnapshot
from rxvision.data.snapshot_shards import (
    MARKER_FILE,
    IndexEntry,
    assign_shards,
    index_directory,
    shard_name,
    write_index,
    write_shards,
)
from rxvision.errors import SnapshotError

pytestmark = pytest.mark.unit


def photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=80)


def checkout(photos: Path, dataset: Path, entries: list[IndexEntry]) -> PackedSnapshot:
    write_shards(photos, entries, dataset / SHARDS_DIR)
    write_index(entries, dataset / INDEX_FILE)
    (dataset / MARKER_FILE).write_text("{}")
    return PackedSnapshot(dataset)


@pytest.fixture
def nights(tmp_path: Path) -> tuple[PackedSnapshot, PackedSnapshot]:
    """Night 1 verified (shards of 3, 3, 1); night 2 adds a photo and keeps shards 0 and
    1, which are hard links to night 1's files, as DVC checks out both from its cache."""
    photos = tmp_path / "photos"
    for i in range(7):
        photo(photos / ("amlo" if i % 2 else "ibup") / f"img-{i:02d}.jpg", i)
    first, _ = assign_shards(index_directory(photos), 3)
    night1 = checkout(photos, tmp_path / "snapshots" / "n1", first)
    night1.verify(record=True)
    photo(photos / "amlo" / "img-99.jpg", 99)
    second, kept = assign_shards(index_directory(photos), 3, first)
    assert kept == 2
    night2 = checkout(photos, tmp_path / "snapshots" / "n2", second)
    for shard in (0, 1):
        night2.shard_path(shard).unlink()
        os.link(night1.shard_path(shard), night2.shard_path(shard))
    return night1, night2


def parsed_offsets(packed: PackedSnapshot) -> dict[str, int]:
    return {
        image.path: image.offset
        for shard, expected in packed.shards().items()
        for image in packed.parsed_shard_images(shard, expected)
    }


def test_the_same_files_with_the_same_images_are_not_read_again(
    nights: tuple[PackedSnapshot, PackedSnapshot], monkeypatch: pytest.MonkeyPatch
) -> None:
    night1, night2 = nights
    assert [p.dataset for p in earlier_checkouts(night2.dataset)] == [night1.dataset]
    before = shards_verified_before(night2, earlier_checkouts(night2.dataset))
    assert sorted(before) == [0, 1]
    read: list[int] = []
    reader = night2.verified_images

    def reading(shard: int, expected: dict[str, IndexEntry]) -> Iterator[object]:
        read.append(shard)
        return reader(shard, expected)

    monkeypatch.setattr(night2, "verified_images", reading)
    assert night2.verify(record=True, verified=before) == 8
    assert read == [2]
    # the record is what parsing every shard gives
    assert PackedSnapshot(night2.dataset).recorded_offsets == parsed_offsets(night2)


def test_a_copy_of_a_verified_shard_is_verified_again(
    nights: tuple[PackedSnapshot, PackedSnapshot],
) -> None:
    night1, night2 = nights
    night2.shard_path(1).unlink()
    shutil.copyfile(night1.shard_path(1), night2.shard_path(1))
    assert sorted(shards_verified_before(night2, earlier_checkouts(night2.dataset))) == [0]


def test_a_linked_shard_listed_with_other_images_is_verified_and_refused(
    nights: tuple[PackedSnapshot, PackedSnapshot],
) -> None:
    _, night2 = nights
    entries = night2.entries
    victim = next(e for e in entries if e.shard == 1)
    changed = [
        IndexEntry(e.path, e.label, "0" * 64, e.size, e.shard) if e == victim else e
        for e in entries
    ]
    write_index(changed, night2.dataset / INDEX_FILE)
    night2 = PackedSnapshot(night2.dataset)
    before = shards_verified_before(night2, earlier_checkouts(night2.dataset))
    assert sorted(before) == [0]
    with pytest.raises(SnapshotError, match=f"{victim.path}: hash differs from the index"):
        night2.verify(record=True, verified=before)
    assert not (night2.dataset / LOCATIONS_FILE).exists()


def test_an_earlier_checkout_without_its_record_is_passed_over(
    nights: tuple[PackedSnapshot, PackedSnapshot],
) -> None:
    night1, night2 = nights
    earlier = earlier_checkouts(night2.dataset)
    (night1.dataset / LOCATIONS_FILE).unlink()  # pruned while tonight's checkout runs
    assert shards_verified_before(night2, earlier) == {}
    assert earlier_checkouts(night2.dataset) == []


def test_verified_offsets_that_do_not_list_the_shard_are_refused(
    nights: tuple[PackedSnapshot, PackedSnapshot],
) -> None:
    _, night2 = nights
    with pytest.raises(SnapshotError, match=shard_name(0)):
        night2.verify(verified={0: {"ibup/img-00.jpg": 0}})
