"""EarlierRows: an earlier set's rows found by file sha256, its shards read on first use
and a few kept, a shard that disagrees with its manifest refused by name."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest

from rxvision.data.feature_manifest import ShardRecord
from rxvision.data.feature_reuse import EarlierRows
from rxvision.errors import FeatureStoreError


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def fetch_from(blobs: dict[str, bytes]) -> Callable[[ShardRecord], bytes]:
    """A fetch reading each shard's object from ``blobs`` by its key."""
    return lambda shard: blobs[shard.key]


def earlier_set(rows_per_shard: int = 3, shards: int = 3) -> tuple[list[ShardRecord], dict]:
    """Shards whose row r of shard s is filled with 10*s + r, hashed 'h<s>-<r>'."""
    records, blobs = [], {}
    for s in range(shards):
        pixels = np.stack([np.full((4, 4, 3), 10 * s + r, np.uint8) for r in range(rows_per_shard)])
        key = f"attempts/a/shard-{s:05d}.npy"
        blobs[key] = npy(pixels)
        records.append(
            ShardRecord(
                key,
                [f"c/{s}-{r}.jpg" for r in range(rows_per_shard)],
                ["c"] * rows_per_shard,
                [f"h{s}-{r}" for r in range(rows_per_shard)],
                [f"{s:016x}"] * rows_per_shard,
                ["localized" if r else "empty" for r in range(rows_per_shard)],
            )
        )
    return records, blobs


def test_a_row_is_found_by_its_sha256_with_its_pixels_and_facts() -> None:
    records, blobs = earlier_set()
    rows = EarlierRows("set-a", records, fetch_from(blobs))
    assert len(rows) == 9 and "h2-1" in rows and "h9-9" not in rows
    row = rows.row("h2-1")
    assert row.pixels.shape == (4, 4, 3) and int(row.pixels[0, 0, 0]) == 21
    assert (row.phash, row.located) == (f"{2:016x}", "localized")
    assert rows.row("h0-0").located == "empty"


def test_each_shard_is_fetched_once_while_kept_and_again_after_eviction() -> None:
    records, blobs = earlier_set()
    fetched: list[str] = []

    def fetch(shard: ShardRecord) -> bytes:
        fetched.append(shard.key)
        return blobs[shard.key]

    rows = EarlierRows("set-a", records, fetch, keep=2)
    for digest in ["h0-0", "h0-1", "h1-0", "h0-2", "h1-2"]:
        rows.row(digest)
    assert fetched == [records[0].key, records[1].key]
    rows.row("h2-0")  # a third shard: the least recently used (shard 0) goes
    rows.row("h0-0")
    assert fetched == [records[0].key, records[1].key, records[2].key, records[0].key]


def test_a_shard_with_other_rows_than_its_manifest_is_refused_by_name() -> None:
    records, blobs = earlier_set()
    blobs[records[1].key] = npy(np.zeros((2, 4, 4, 3), np.uint8))
    rows = EarlierRows("set-a", records, fetch_from(blobs))
    with pytest.raises(FeatureStoreError, match=r"set-a/attempts/a/shard-00001\.npy: 2 rows"):
        rows.row("h1-0")
    # its rows are no longer offered (they go to the decoders), the others still are
    assert "h1-0" not in rows and "h0-0" in rows and len(rows) == 9
    blobs[records[2].key] = b"not an npy file"
    with pytest.raises(FeatureStoreError, match=r"shard-00002\.npy: cannot read"):
        rows.row("h2-0")


def test_a_shard_read_in_place_gives_the_rows_it_lists_of_its_object() -> None:
    # a later set's record of rows 2 and 0 of set-a's shard 1 (renamed 'h-x', 'h-y')
    records, blobs = earlier_set()
    source = records[1]
    chained = ShardRecord(
        source.key, ["c/x.jpg", "c/y.jpg"], ["c", "c"], ["h-x", "h-y"],
        ["p2", "p0"], ["localized", "empty"], set_key="set-a", rows=[2, 0],
    )  # fmt: skip
    read: list[str] = []

    def fetch(shard: ShardRecord) -> bytes:
        read.append(f"{shard.set_key}/{shard.key}")
        return blobs[shard.key]

    rows = EarlierRows("set-b", [chained], fetch)
    assert int(rows.row("h-x").pixels[0, 0, 0]) == 12 and rows.row("h-x").phash == "p2"
    assert int(rows.row("h-y").pixels[0, 0, 0]) == 10 and rows.row("h-y").located == "empty"
    assert read == [f"set-a/{source.key}"]
    # an object with fewer rows than its record lists is refused, naming it
    blobs[source.key] = npy(np.zeros((2, 4, 4, 3), np.uint8))
    again = EarlierRows("set-b", [chained], fetch)
    with pytest.raises(FeatureStoreError, match=rf"set-a/{source.key}: 2 rows"):
        again.row("h-x")
