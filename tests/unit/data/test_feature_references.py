"""plan_references: which rows of a new set are read in place from an earlier set's
objects, and which are left to write; stored_rows_of: an object's header checked."""

from __future__ import annotations

import io

import numpy as np

from rxvision.data.feature_manifest import FeatureManifest, ShardRecord
from rxvision.data.feature_references import MIN_SHARE, plan_references, stored_rows_of
from rxvision.data.source_image import SourceImage


def earlier(shards: list[ShardRecord], key: str = "set-b") -> FeatureManifest:
    return FeatureManifest(key, "0" * 64, {}, ["a", "b"], 12, shards, "", "x")


def record(s: int, count: int = 4, **kw: object) -> ShardRecord:
    """Shard ``s`` of ``count`` rows: row r is file 'h<s>-<r>' at a/<s>-<r>.jpg."""
    return ShardRecord(
        f"attempts/x/shard-{s:05d}.npy",
        [f"a/{s}-{r}.jpg" for r in range(count)],
        ["a"] * count,
        [f"h{s}-{r}" for r in range(count)],
        [f"{10 * s + r:016x}" for r in range(count)],
        ["localized"] * count,
        **kw,  # type: ignore[arg-type]
    )


def image(path: str, sha256: str) -> SourceImage:
    return SourceImage(path, path.split("/")[0], "/nowhere", sha256=sha256)


def test_whole_and_mostly_kept_shards_are_read_in_place_the_rest_left_to_write() -> None:
    before = earlier([record(0), record(1), record(2)])
    images = sorted(
        [
            *(image(f"a/0-{r}.jpg", f"h0-{r}") for r in range(4)),  # all of shard 0
            image("a/1-0.jpg", "h1-0"),  # 3 of 4 of shard 1, one renamed and relabelled
            image("a/1-3.jpg", "h1-3"),
            image("b/moved.jpg", "h1-2"),
            image("a/2-1.jpg", "h2-1"),  # 1 of 4 of shard 2: under MIN_SHARE
            image("a/new.jpg", "new"),
        ],
        key=lambda i: i.path,
    )
    plan = plan_references(images, before, lambda key: 4, shard_size=4)
    assert MIN_SHARE == 0.5 and plan.rows == 7
    whole, most = plan.shards
    assert (whole.key, whole.set_key, whole.rows) == (before.shards[0].key, "set-b", None)
    assert whole.paths == [f"a/0-{r}.jpg" for r in range(4)] and whole.phash[3] == f"{3:016x}"
    assert (most.key, most.set_key) == (before.shards[1].key, "set-b")
    assert most.paths == ["a/1-0.jpg", "a/1-3.jpg", "b/moved.jpg"]
    assert most.labels == ["a", "a", "b"] and most.rows == [0, 3, 2]
    assert most.sha256 == ["h1-0", "h1-3", "h1-2"] and most.phash[2] == f"{12:016x}"
    assert [i.path for i in plan.rest] == ["a/2-1.jpg", "a/new.jpg"]


def test_an_object_that_cannot_be_read_in_place_leaves_its_rows_to_write() -> None:
    before = earlier([record(0), record(1)])
    images = [image(f"a/{s}-{r}.jpg", f"h{s}-{r}") for s in range(2) for r in range(4)]
    checked: list[str] = []

    def stored_rows(key: str) -> int | None:
        checked.append(key)
        return None if "00001" in key else 4

    plan = plan_references(images, before, stored_rows, shard_size=4)
    assert checked == [f"set-b/{before.shards[s].key}" for s in range(2)]
    assert [s.key for s in plan.shards] == [before.shards[0].key]
    assert [i.path for i in plan.rest] == [f"a/1-{r}.jpg" for r in range(4)]
    # an object shorter than the rows its record lists is not read either
    assert plan_references(images, before, lambda key: 3, shard_size=4).shards == []


def test_a_row_read_in_place_twice_points_at_the_object_that_holds_it() -> None:
    # set-b read rows 1 and 3 of set-a's 4-row object; set-c keeps both under new
    # names: its record names set-a's object and its array rows, never set-b
    chained = record(0, 2, set_key="set-a", rows=[1, 3])
    before = earlier([chained])
    images = [image("a/x.jpg", "h0-1"), image("a/y.jpg", "h0-0")]
    plan = plan_references(images, before, lambda key: 4, shard_size=4)
    (kept,) = plan.shards
    assert (kept.set_key, kept.rows, kept.key) == ("set-a", [3, 1], chained.key)
    assert before.object_key(chained) == f"set-a/{chained.key}"
    assert before.sets_read() == ["set-a"]


def test_a_small_shard_is_left_to_write_so_that_small_shards_merge() -> None:
    # shard 0 is a whole 8-row shard, shard 1 a night's 3 new photos, shard 2 a night's 4
    before = earlier([record(0, 8), record(1, 3), record(2, 4)])
    images = [
        image(f"a/{s}-{r}.jpg", f"h{s}-{r}") for s, n in ((0, 8), (1, 3), (2, 4)) for r in range(n)
    ]
    sizes = {before.object_key(r): len(r.paths) for r in before.shards}
    plan = plan_references(images, before, sizes.__getitem__, shard_size=8)
    # under half a shard of 8 rows: copied into the new set's shards with the new photos
    assert [s.key for s in plan.shards] == [before.shards[0].key, before.shards[2].key]
    assert [i.path for i in plan.rest] == [f"a/1-{r}.jpg" for r in range(3)]
    # a set of small shards reads them all in place when shards are that small
    assert plan_references(images, before, sizes.__getitem__, shard_size=6).rest == []


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def test_an_objects_rows_are_read_from_its_header_and_checked_against_its_size() -> None:
    data = npy(np.zeros((7, 8, 8, 3), np.uint8))
    assert stored_rows_of(data[:1024], len(data), (8, 8, 3)) == 7
    assert stored_rows_of(data[:1024], len(data) - 1, (8, 8, 3)) is None  # cut short
    assert stored_rows_of(data[:1024], len(data), (9, 9, 3)) is None  # another size
    other = npy(np.zeros((7, 8, 8, 3), np.float32))
    assert stored_rows_of(other[:1024], len(other), (8, 8, 3)) is None
    assert stored_rows_of(b"not an npy file", 15, (8, 8, 3)) is None
    assert stored_rows_of(b"", 0, (8, 8, 3)) is None
