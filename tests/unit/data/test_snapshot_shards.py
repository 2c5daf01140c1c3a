"""Cutting a snapshot into shards: a new snapshot keeps the unchanged shards of the one
before it, byte for byte, and packs everything else into new shards."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rxvision.data.snapshot_shards import (
    IndexEntry,
    assign_shards,
    index_directory,
    shard_name,
    write_shards,
)

pytestmark = pytest.mark.unit


def entry(path: str, sha: str = "") -> IndexEntry:
    return IndexEntry(path, path.split("/")[0], sha or f"sha-{path}", 100)


def members(entries: list[IndexEntry]) -> dict[int, list[str]]:
    by_shard: dict[int, list[str]] = {}
    for e in entries:
        by_shard.setdefault(e.shard, []).append(e.path)
    return by_shard


LAST_NIGHT = [entry(f"c/{name}") for name in "abcdefghijkl"]


def last_night(shard_size: int = 4) -> list[IndexEntry]:
    entries, kept = assign_shards(LAST_NIGHT, shard_size)
    assert kept == 0
    return entries


def test_without_a_last_index_images_are_cut_in_path_order() -> None:
    entries, kept = assign_shards(list(reversed(LAST_NIGHT)), 5)
    assert kept == 0
    assert [e.path for e in entries] == sorted(e.path for e in LAST_NIGHT)
    assert members(entries) == {
        0: ["c/a", "c/b", "c/c", "c/d", "c/e"],
        1: ["c/f", "c/g", "c/h", "c/i", "c/j"],
        2: ["c/k", "c/l"],
    }


def test_unchanged_shards_are_kept_and_new_images_go_to_new_shards() -> None:
    tonight = [*LAST_NIGHT, entry("c/bb"), entry("c/m"), entry("d/a")]
    entries, kept = assign_shards(tonight, 4, last_night())
    assert kept == 3
    assert members(entries) == {
        0: ["c/a", "c/b", "c/c", "c/d"],
        1: ["c/e", "c/f", "c/g", "c/h"],
        2: ["c/i", "c/j", "c/k", "c/l"],
        3: ["c/bb", "c/m", "d/a"],
    }
    # the index itself stays in path order, labels and sizes as tonight's
    assert [e.path for e in entries] == sorted(e.path for e in tonight)
    assert {e.path: e.label for e in entries}["d/a"] == "d"


def test_a_shard_that_lost_or_changed_an_image_is_repacked_with_the_new_ones() -> None:
    tonight = [e for e in LAST_NIGHT if e.path != "c/b"]  # shard 0 lost one
    tonight = [entry("c/g", "changed") if e.path == "c/g" else e for e in tonight]  # shard 1
    tonight.append(entry("c/z"))
    entries, kept = assign_shards(tonight, 4, last_night())
    assert kept == 1
    assert members(entries) == {
        0: ["c/i", "c/j", "c/k", "c/l"],
        1: ["c/a", "c/c", "c/d", "c/e"],
        2: ["c/f", "c/g", "c/h", "c/z"],
    }
    assert {e.path: e.sha256 for e in entries}["c/g"] == "changed"


def test_small_shards_merge_instead_of_piling_up() -> None:
    # last night: 4 + 4 + 4 + a shard of 1 (under half of 4): that one is repacked
    previous, _ = assign_shards([*LAST_NIGHT, entry("c/m")], 4)
    entries, kept = assign_shards([*LAST_NIGHT, entry("c/m"), entry("c/n")], 4, previous)
    assert kept == 3
    assert members(entries)[3] == ["c/m", "c/n"]
    # a shard larger than the shard size now (the setting shrank) is cut afresh too
    entries, kept = assign_shards(LAST_NIGHT, 2, last_night())
    assert kept == 0 and len(members(entries)) == 6


def test_a_kept_shard_is_written_byte_for_byte_as_last_night(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for i in range(7):
        path = photos / ("amlo" if i % 2 else "ibup") / f"img-{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, (64, 64, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=80)
    before, _ = assign_shards(index_directory(photos), 3)
    write_shards(photos, before, tmp_path / "v1")
    Image.new("RGB", (64, 64), "white").save(photos / "amlo" / "img-00a.jpg")
    after, kept = assign_shards(index_directory(photos), 3, before)
    write_shards(photos, after, tmp_path / "v2")

    def digests(folder: Path) -> set[str]:
        return {hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}

    # shards of 3, 3, 1 last night: the two full ones are the same objects tonight
    assert kept == 2
    assert len(digests(tmp_path / "v1") & digests(tmp_path / "v2")) == 2
    assert (tmp_path / "v2" / shard_name(2)).is_file()
    assert not (tmp_path / "v2" / shard_name(3)).exists()
