"""Scoring and committing a shard on local folders with injected models: rows, errors,
commits, a store outage, reruns."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from serving_fixtures import CLASSES, loaded_model, loader_of, read_rows

from rxvision.serving.errors import ScoringError, StorageUnavailable
from rxvision.serving.finalize import finalize_scoring
from rxvision.serving.model_contract import LoadedModel
from rxvision.serving.model_pool import ModelPool
from rxvision.serving.plan import list_input_shards, plan_shards
from rxvision.serving.predictions import PREDICTION_SCHEMA
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.scoring_run import score_batch
from rxvision.serving.shard import score_shard, shard_uri
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.unit


# --- rows ----------------------------------------------------------------------------------


def test_shard_rows_schema_errors_and_commit(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    output = tmp_path / "out"
    keys = [k for s in list_input_shards(str(image_dir), 100) for k in s.keys]
    pool = ModelPool(
        "models:/tiny/1", None, config, loader=loader_of({"models:/tiny/1": loaded_model()})
    )
    seen: list[int] = []
    result = score_shard(
        "models:/tiny/1",
        keys,
        str(output),
        "shard-00000",
        config=config,
        pool=pool,
        storage=Storage(),
        progress=seen.append,
    )
    assert seen[-1] == 13 and seen == sorted(seen)
    table = pq.read_table(shard_uri(str(output), "shard-00000"))
    assert table.schema.equals(PREDICTION_SCHEMA)
    assert result.rows == table.num_rows == 13
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == keys  # key order, errors in place
    errors = {Path(r["key"]).name: r["error"] for r in rows if r["error"]}
    assert errors.keys() == {"truncated.jpg", "empty.jpg", "notes.png"}
    assert errors["truncated.jpg"].startswith("corrupt: ")
    assert errors["empty.jpg"].startswith("empty_file: ")
    assert errors["notes.png"].startswith("not_an_image: ")
    good = [r for r in rows if not r["error"]]
    assert len(good) == 10
    for row in good:
        assert row["label"] in CLASSES and row["label"] == row["topk_labels"][0]
        assert len(row["topk_labels"]) == len(row["topk_probs"]) == 2
        assert row["topk_probs"][0] == pytest.approx(row["confidence"])
        assert row["needs_review"] == (row["confidence"] < 0.5)
        assert (row["scored_by"], row["model_version"], row["runtime"]) == (
            "primary",
            "tiny/1",
            "eager",
        )
    summary = json.loads((output / "_summary" / "shard-00000.json").read_text())
    assert summary["images"] == 13 and summary["errors"] == 3
    assert summary["error_reasons"] == {"corrupt": 1, "empty_file": 1, "not_an_image": 1}
    assert summary["latency_ms"]["image"]["count"] == 10
    assert summary["latency_ms"]["batch"]["p99"] is not None
    assert not list((output / "_tmp").glob("*"))  # committed: nothing left in _tmp


class FlakyStorage(Storage):
    """Local files, but the store goes away after ``ok`` reads (as S3 does when killed)."""

    def __init__(self, ok: int, error: Exception) -> None:
        super().__init__()
        self.ok, self.error = ok, error

    def read(self, uri: str) -> bytes:
        if self.ok <= 0:
            raise self.error
        self.ok -= 1
        return super().read(uri)


def test_store_outage_aborts_the_shard_instead_of_error_rows(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    from botocore.exceptions import EndpointConnectionError

    output = tmp_path / "out"
    keys = [k for s in list_input_shards(str(image_dir), 100) for k in s.keys]
    pool = ModelPool(
        "models:/tiny/1", None, config, loader=loader_of({"models:/tiny/1": loaded_model()})
    )
    down = EndpointConnectionError(endpoint_url="http://127.0.0.1:1/bucket")
    with pytest.raises(StorageUnavailable, match="storage unreachable reading"):
        score_shard(
            "models:/tiny/1",
            keys,
            str(output),
            "shard-00000",
            config=config,
            pool=pool,
            storage=FlakyStorage(4, down),
        )
    assert not (output / "shards").exists() or not list((output / "shards").glob("*"))
    # a per-object failure (here: permission denied) stays one error row
    result = score_shard(
        "models:/tiny/1",
        keys,
        str(output),
        "shard-00000",
        config=config,
        pool=pool,
        storage=FlakyStorage(len(keys) - 1, PermissionError("denied")),
    )
    rows = pq.read_table(result.uri).to_pylist()
    assert len(rows) == len(keys)
    assert rows[-1]["error"].startswith("download_failed: PermissionError")


# --- runs, reruns and the manifest ----------------------------------------------------------


def test_a_run_reports_its_image_count_then_each_shards_rows_skipped_ones_too(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    output = tmp_path / "out"
    load = loader_of({"models:/tiny/1": loaded_model()})
    for _ in range(2):  # the rerun skips every shard: it still reports them done
        planned: list[int] = []
        rows: dict[str, list[int]] = {}
        score_batch(
            "models:/tiny/1",
            str(image_dir),
            str(output),
            config=config,
            loader=load,
            planned=planned.append,
            progress=lambda shard, n, seen=rows: seen.setdefault(shard, []).append(n),
        )
        assert planned == [13]
        assert {shard: seen[-1] for shard, seen in rows.items()} == {
            "shard-00000": 5,
            "shard-00001": 5,
            "shard-00002": 3,
        }
        assert all(seen == sorted(seen) for seen in rows.values())


def test_rerun_skips_committed_shards_and_never_duplicates(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    output = tmp_path / "out"
    loads: list[str] = []

    def load(uri: str) -> LoadedModel:
        loads.append(uri)
        return loaded_model("tiny/1")

    shards = plan_shards(str(image_dir), str(output), config.shard_size)
    # a first run that committed one shard, then died
    pool = ModelPool("models:/tiny/1", None, config, loader=load)
    score_shard(
        "models:/tiny/1", shards[1].keys, str(output), shards[1].shard_id, config=config, pool=pool
    )
    (output / "_tmp").mkdir(exist_ok=True)
    (output / "_tmp" / "shard-00002.dead.parquet").write_bytes(b"half a file")
    with pytest.raises(ScoringError, match="shard-00000, shard-00002"):
        finalize_scoring(str(output))
    loads.clear()
    manifest = score_batch(
        "models:/tiny/1", str(image_dir), str(output), config=config, loader=load
    )
    assert manifest["skipped_shards"] == ["shard-00001"]
    assert loads == ["models:/tiny/1"]
    keys = [r["key"] for r in read_rows(output)]
    assert sorted(keys) == sorted(k for s in shards for k in s.keys)
    assert len(keys) == len(set(keys)) == manifest["rows"] == 13
    assert (output / "_SUCCESS").is_file()
    assert not list((output / "_tmp").glob("*"))
    assert manifest["metrics"]["images"] == 13
    # everything committed: a third run loads no model at all
    loads.clear()
    again = score_batch("models:/tiny/1", str(image_dir), str(output), config=config, loader=load)
    assert loads == [] and again["rows"] == 13
