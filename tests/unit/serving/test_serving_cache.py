"""The inference cache on local folders with injected models: hits, misses by
construction (content, version, preprocessing, row contract), rows served only to a run
that allows the runtime that computed them, what is never cached, compaction, and a cache
that cannot be written."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from serving_fixtures import broken_model, loaded_model, write_images

from rxvision.serving.cache import (
    CACHED_COLUMNS,
    SEGMENT_SCHEMA,
    CacheConfig,
    InferenceCache,
    RowContract,
    content_hash,
)
from rxvision.serving.model_contract import LoadedModel
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.scoring_run import score_batch
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.unit

CHAMPION = "models:/tiny@champion"


def cached_config(config: ScoringConfig, cache: Path, **fields: Any) -> ScoringConfig:
    """``config`` with a cache in ``cache``; ``fields``: more cache (or top-level) fields."""
    top = {k: v for k, v in fields.items() if k in ScoringConfig.model_fields}
    cache_fields = {k: v for k, v in fields.items() if k not in top}
    return ScoringConfig.model_validate(
        {**config.model_dump(), **top, "cache": {"uri": str(cache), **cache_fields}}
    )


def run(
    config: ScoringConfig, image_dir: Path, output: Path, models: dict[str, LoadedModel]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Score into ``output``; the manifest and the rows by key."""

    def load(uri: str) -> LoadedModel:
        if uri not in models:
            raise ConnectionError(f"registry unreachable for {uri}")
        return models[uri]

    manifest = score_batch(CHAMPION, str(image_dir), str(output), config=config, loader=load)
    rows = {}
    for path in sorted((output / "shards").glob("*.parquet")):
        rows.update({r["key"]: r for r in pq.read_table(path).to_pylist()})
    return manifest, rows


def segments(cache: Path) -> list[Path]:
    return sorted(cache.rglob("seg-*.parquet"))


def predictions(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in CACHED_COLUMNS}


def test_a_rescore_of_unchanged_images_is_served_from_the_cache(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    cfg = cached_config(config, tmp_path / "cache")
    models = {CHAMPION: loaded_model("tiny/1")}
    first, cold = run(cfg, image_dir, tmp_path / "run1", models)
    # b/ holds byte copies of a/'s first four images: once a/'s shard has committed,
    # the copies are served from the cache within the same run
    copies = {k for k, r in cold.items() if r["cached"]}
    assert first["cached"] == 4 and first["rows"] == 13
    assert sorted(Path(k).relative_to(image_dir).as_posix() for k in copies) == [
        f"b/img-00{i}.jpg" for i in range(4)
    ]
    # a segment per shard with fresh rows: shard-00002's one good image was a copy
    assert len(segments(tmp_path / "cache")) == 2

    second, warm = run(cfg, image_dir, tmp_path / "run2", models)
    assert second["cached"] == 10 and second["rows"] == 13
    assert [s["cached"] for s in second["shards"]] == [5, 4, 1]
    for key, row in warm.items():
        if row["error"]:  # error rows are never cached: they are tried again
            assert not row["cached"] and cold[key]["error"] == row["error"]
            continue
        assert row["cached"] and row["scored_by"] == "primary"
        assert predictions(row) == predictions(cold[key])
        assert row["content_sha256"] == content_hash(Path(key).read_bytes())
    # nothing new to store: no segment was added
    assert len(segments(tmp_path / "cache")) == 2
    assert second["metrics"]["batches"] == 0  # not one model call


def test_a_changed_image_under_the_same_key_is_scored_afresh(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    cfg = cached_config(config, tmp_path / "cache")
    models = {CHAMPION: loaded_model("tiny/1")}
    run(cfg, image_dir, tmp_path / "run1", models)
    changed = image_dir / "a" / "img-002.jpg"
    other = write_images(tmp_path / "other", 1, size=56)[0].read_bytes()
    changed.write_bytes(other)

    manifest, rows = run(cfg, image_dir, tmp_path / "run2", models)
    _, truth = run(config, image_dir, tmp_path / "uncached", models)
    row = rows[str(changed)]
    assert not row["cached"] and row["content_sha256"] == content_hash(other)
    assert predictions(row) == predictions(truth[str(changed)])
    assert manifest["cached"] == 9


def test_a_new_version_a_new_preprocessing_or_a_new_row_contract_misses(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    cache = tmp_path / "cache"
    cfg = cached_config(config, cache)
    run(cfg, image_dir, tmp_path / "run1", {CHAMPION: loaded_model("tiny/1")})
    top3 = cached_config(config, cache, top_k=3)
    changes = {
        "promoted": (cfg, loaded_model("tiny/2", 1)),
        "resized": (cfg, loaded_model("tiny/1", img_size=24)),
        "top_k": (top3, loaded_model("tiny/1")),
    }
    for name, (cfg_, model) in changes.items():
        manifest, rows = run(cfg_, image_dir, tmp_path / name, {CHAMPION: model})
        # only b/'s byte copies of a/ hit: rows this run stored in its own partition
        served = {k for k, r in rows.items() if r["cached"]}
        assert manifest["cached"] == len(served) == 4, name
        assert all("/b/img-00" in k for k in served), name
        assert {r["model_version"] for r in rows.values() if not r["error"]} == {model.label}
    # four partitions: the versions, the preprocessing and the row contract
    assert len({p.parent for p in segments(cache)}) == 4


def test_no_reuse_scores_everything_and_refreshes_the_cache(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    cache = tmp_path / "cache"
    models = {CHAMPION: loaded_model("tiny/1")}
    run(cached_config(config, cache), image_dir, tmp_path / "run1", models)
    manifest, rows = run(
        cached_config(config, cache, reuse=False), image_dir, tmp_path / "run2", models
    )
    assert manifest["cached"] == 0 and not any(r["cached"] for r in rows.values())
    assert manifest["metrics"]["images"] - manifest["metrics"]["errors"] == 10  # all scored
    assert len(segments(cache)) == 2 + 3  # run 1's, and each of run 2's shards


def test_fallback_rows_are_never_cached(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    cache = tmp_path / "cache"
    cfg = cached_config(config, cache)
    models = {CHAMPION: broken_model("tiny/2"), "models:/tiny@fallback": loaded_model("tiny/1")}
    manifest, rows = run(cfg, image_dir, tmp_path / "run1", models)
    assert manifest["metrics"]["fallback_count"] == 10
    assert not any(r["cached"] for r in rows.values())
    assert segments(cache) == []
    again, _ = run(cfg, image_dir, tmp_path / "run2", models)
    assert again["cached"] == 0 and again["metrics"]["fallback_count"] == 10


def test_a_partition_past_max_segments_is_merged(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    cache = tmp_path / "cache"
    cfg = cached_config(config, cache, shard_size=2, max_segments=3)
    models = {CHAMPION: loaded_model("tiny/1")}
    run(cfg, image_dir, tmp_path / "run1", models)
    assert len(segments(cache)) <= 3
    manifest, _ = run(cfg, image_dir, tmp_path / "run2", models)
    assert manifest["cached"] == 10


class NoCacheWrites(Storage):
    """Local files, but every write under the cache fails."""

    def __init__(self, cache: Path) -> None:
        super().__init__()
        self.cache = str(cache)

    def write(self, uri: str, data: bytes) -> None:
        if uri.startswith(self.cache):
            raise PermissionError(f"access denied: {uri}")
        super().write(uri, data)


def test_a_cache_that_cannot_be_written_never_fails_the_run(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    cache = tmp_path / "cache"
    output = tmp_path / "out"
    manifest = score_batch(
        CHAMPION,
        str(image_dir),
        str(output),
        config=cached_config(config, cache),
        storage=NoCacheWrites(cache),
        loader=lambda uri: loaded_model("tiny/1"),
    )
    assert manifest["rows"] == 13 and (output / "_SUCCESS").is_file()
    assert segments(cache) == []


def _row(digest: str, label: str, key: str | None, tag: str | None) -> dict[str, Any]:
    base = {name: None for name in CACHED_COLUMNS}
    return {**base, "label": label, "content_sha256": digest, "source_key": key, "source_tag": tag}


def test_an_object_is_served_by_key_and_listing_tag_through_compaction(tmp_path: Path) -> None:
    storage = Storage()
    config = CacheConfig(uri=str(tmp_path / "cache"), max_segments=2)
    loaded = loaded_model("tiny/1")
    contract = RowContract(top_k=3, tta_rotations=1, review_threshold=0.6)
    writer = InferenceCache(config, storage)
    part = writer.partition(loaded, contract)
    # the same bytes under two keys, and a row read from a local file (no tag)
    writer.store(part, [_row("a" * 64, "p1", "s3://b/in/x.jpg", "e1:10")])
    writer.store(part, [_row("a" * 64, "p1", "s3://b/in/y.jpg", "e1:10")])
    writer.store(part, [_row("c" * 64, "p2", "/in/z.jpg", None)])
    assert len(segments(tmp_path / "cache")) == 1  # three segments: merged into one

    read = InferenceCache(config, storage).partition(loaded, contract)
    for key in ("s3://b/in/x.jpg", "s3://b/in/y.jpg"):
        found = read.get_source(key, "e1:10")
        assert found is not None and found[0] == "a" * 64 and found[1]["label"] == "p1"
    # overwritten under its key: another ETag, a miss (the caller downloads and hashes)
    assert read.get_source("s3://b/in/x.jpg", "e2:10") is None
    assert read.get_source("/in/z.jpg", "") is None
    assert read.get("c" * 64) is not None and read.get("c" * 64)["label"] == "p2"  # type: ignore[index]
    # --no-cache reads nothing
    off = InferenceCache(CacheConfig(uri=config.uri, reuse=False), storage)
    assert off.partition(loaded, contract).get_source("s3://b/in/x.jpg", "e1:10") is None


def test_a_run_without_reuse_stores_its_rows_but_holds_none(tmp_path: Path) -> None:
    storage = Storage()
    config = CacheConfig(uri=str(tmp_path / "cache"), reuse=False)
    loaded = loaded_model("tiny/1")
    contract = RowContract(top_k=3, tta_rotations=1, review_threshold=0.6)
    writer = InferenceCache(config, storage)
    part = writer.partition(loaded, contract)
    for n in range(3):
        written = writer.store(part, [_row(f"{n:x}" * 64, "p1", f"s3://b/in/{n}.jpg", "e:1")])
        assert written == 1
    # nothing kept in memory for a partition that never serves (a 100,000-image run)
    assert part.rows == {} and part.sources == {}
    # yet every row is in the cache for the next run that reads it
    read = InferenceCache(CacheConfig(uri=config.uri), storage).partition(loaded, contract)
    assert sorted(read.rows) == [f"{n:x}" * 64 for n in range(3)]


def test_merging_segments_changes_nothing_a_reader_sees(tmp_path: Path) -> None:
    storage = Storage()
    uri = str(tmp_path / "cache")
    loaded = loaded_model("tiny/1")
    contract = RowContract(top_k=3, tta_rotations=1, review_threshold=0.6)
    writer = InferenceCache(CacheConfig(uri=uri, max_segments=100), storage)
    part = writer.partition(loaded, contract)
    # a segment from before the source columns, then 12 in which hashes recur with new
    # labels (the newest wins), keys are re-read with other bytes, some rows keyless
    old = pa.Table.from_pylist([{"content_sha256": "0" * 64, "label": "old", "confidence": 0.5}])
    Path(part.uri).mkdir(parents=True)
    pq.write_table(old, str(Path(part.uri) / "seg-0000-old.parquet"))
    rng = random.Random(0)
    for segment in range(12):
        rows = []
        for _ in range(20):
            digest = f"{rng.randrange(15):x}" * 64
            key = rng.choice([None, f"s3://b/in/{rng.randrange(8)}.jpg", "/in/local.jpg"])
            tag = f"e{rng.randrange(3)}:1" if key and key.startswith("s3://") else None
            rows.append(_row(digest, f"p{segment}", key, tag))
        writer.store(part, rows)
    before = InferenceCache(CacheConfig(uri=uri), storage).partition(loaded, contract)
    assert len(before.rows) == 15 and len(before.sources) > 8  # the data has repeats

    merger = InferenceCache(CacheConfig(uri=uri, max_segments=2), storage)
    newest = _row("f" * 64, "newest", "s3://b/in/0.jpg", "e0:1")
    merger.store(merger.partition(loaded, contract), [newest])
    assert len(segments(tmp_path / "cache")) == 1  # 14 segments merged into one

    after = InferenceCache(CacheConfig(uri=uri), storage).partition(loaded, contract)
    assert after.rows == {**before.rows, "f" * 64: predictions(newest)}
    assert after.sources == {**before.sources, ("s3://b/in/0.jpg", "e0:1"): "f" * 64}


def test_segments_written_before_the_source_columns_still_serve(tmp_path: Path) -> None:
    storage = Storage()
    config = CacheConfig(uri=str(tmp_path / "cache"))
    loaded = loaded_model("tiny/1")
    contract = RowContract(top_k=3, tta_rotations=1, review_threshold=0.6)
    part = InferenceCache(config, storage).partition(loaded, contract)
    old = pa.schema([f for f in SEGMENT_SCHEMA if f.name not in ("source_key", "source_tag")])
    row = {name: None for name in old.names} | {"content_sha256": "d" * 64, "label": "p3"}
    Path(part.uri).mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist([row], schema=old), f"{part.uri}/seg-20260101T000000Z-x.parquet"
    )
    read = InferenceCache(config, storage).partition(loaded, contract)
    assert read.get("d" * 64) is not None and read.sources == {}


def test_a_row_is_served_only_to_a_run_that_allows_its_runtime(tmp_path: Path) -> None:
    storage = Storage()
    config = CacheConfig(uri=str(tmp_path / "cache"))
    loaded = loaded_model("tiny/1")
    contract = RowContract(top_k=3, tta_rotations=1, review_threshold=0.6)
    writer = InferenceCache(config, storage)
    part = writer.partition(loaded, contract)
    # "a": scored in fp32, later by INT8 (the newer row); "b": only ever by INT8
    writer.store(part, [{**_row("a" * 64, "fp32", "s3://b/in/a.jpg", "e:1"), "runtime": "eager"}])
    int8 = [
        {**_row(d * 64, "int8", f"s3://b/in/{d}.jpg", "e:1"), "runtime": "onnxruntime-int8"}
        for d in "ab"
    ]
    writer.store(part, int8)

    fp32_only = InferenceCache(config, storage).partition(
        loaded, contract, {"onnxruntime", "eager"}
    )
    assert fp32_only.get("a" * 64) == {
        **predictions(_row("a" * 64, "fp32", None, None)),
        "runtime": "eager",
    }
    assert fp32_only.get_source("s3://b/in/a.jpg", "e:1") is not None
    assert fp32_only.get("b" * 64) is None
    assert fp32_only.get_source("s3://b/in/b.jpg", "e:1") is None

    with_int8 = InferenceCache(config, storage).partition(loaded, contract, {"onnxruntime-int8"})
    assert [with_int8.get(d * 64)["label"] for d in "ab"] == ["int8", "int8"]  # type: ignore[index]
    # no filter: every row, the newest of each hash
    assert {
        r["label"]
        for r in InferenceCache(config, storage).partition(loaded, contract).rows.values()
    } == {"int8"}


def test_rows_of_a_runtime_a_run_does_not_allow_are_scored_again(
    image_dir: Path, tmp_path: Path, config: ScoringConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RXVISION_HOME", str(tmp_path / "home"))  # the local exports
    cache = tmp_path / "cache"
    models = {CHAMPION: loaded_model("tiny/1")}

    first, rows = run(
        cached_config(config, cache, runtimes=["torchscript"]), image_dir, tmp_path / "r1", models
    )
    good = {k for k, r in rows.items() if not r["error"]}
    assert len(good) == 10 and {rows[k]["runtime"] for k in good} == {"torchscript"}
    assert first["cached"] == 4  # b/ holds copies of four of a/'s images

    # eager only: TorchScript's rows are not served; only this run's own copies are
    second, rows = run(
        cached_config(config, cache, runtimes=["eager"]), image_dir, tmp_path / "r2", models
    )
    assert second["cached"] == 4
    assert {rows[k]["runtime"] for k in good} == {"eager"}

    # TorchScript allowed again: eager, the last resort of every run, is always served
    third, rows = run(
        cached_config(config, cache, runtimes=["torchscript"]), image_dir, tmp_path / "r3", models
    )
    assert third["cached"] == 10
    assert {rows[k]["runtime"] for k in good} == {"eager"} and all(rows[k]["cached"] for k in good)
