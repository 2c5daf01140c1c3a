"""The batch scorer on local folders with injected models: shards, rows, errors, commits,
reruns and the fallback path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from serving_fixtures import CLASSES, IMG, broken_model, loaded_model, write_images

from rxvision.errors import ConfigError
from rxvision.serving.batch import (
    PREDICTION_SCHEMA,
    ModelPool,
    ScoringConfig,
    ScoringError,
    Storage,
    StorageUnavailable,
    fallback_for,
    finalize_scoring,
    list_input_shards,
    load_scoring_config,
    plan_shards,
    score_batch,
    score_shard,
    shard_uri,
)
from rxvision.serving.model import LoadedModel

pytestmark = pytest.mark.unit


def loader_of(models: dict[str, LoadedModel]):  # type: ignore[no-untyped-def]
    def load(uri: str) -> LoadedModel:
        if uri not in models:
            raise ConnectionError(f"registry unreachable for {uri}")
        return models[uri]

    return load


def read_rows(output: Path) -> list[dict]:  # type: ignore[type-arg]
    rows: list[dict] = []  # type: ignore[type-arg]
    for path in sorted((output / "shards").glob("*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


# --- shards ------------------------------------------------------------------------------


def test_shards_are_deterministic_and_skip_non_images(image_dir: Path) -> None:
    first = list_input_shards(str(image_dir), 5)
    again = list_input_shards(str(image_dir) + "/", 5)
    assert first == again
    keys = [k for s in first for k in s.keys]
    assert keys == sorted(keys)
    assert len(keys) == 13  # 10 good, truncated, empty, notes.png
    assert not any(k.endswith((".txt", ".hidden.jpg")) for k in keys)
    assert [s.shard_id for s in first] == ["shard-00000", "shard-00001", "shard-00002"]
    assert [len(s.keys) for s in first] == [5, 5, 3]


def test_shard_size_must_be_positive(image_dir: Path) -> None:
    with pytest.raises(ConfigError, match="shard_size"):
        list_input_shards(str(image_dir), 0)


def test_plan_is_reused_when_input_grows(image_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    planned = plan_shards(str(image_dir), str(output), 5)
    write_images(image_dir / "a", 1, size=41)  # overwrites img-000: no new key
    write_images(image_dir / "c", 3)  # new keys after the plan
    assert plan_shards(str(image_dir), str(output), 5) == planned
    with pytest.raises(ConfigError, match="shard_size"):
        plan_shards(str(image_dir), str(output), 7)


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


# --- fallback ------------------------------------------------------------------------------


def test_primary_that_cannot_load_falls_back(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    output = tmp_path / "out"
    loader = loader_of({"models:/tiny@fallback": loaded_model("tiny/1")})
    manifest = score_batch(
        "models:/tiny@champion", str(image_dir), str(output), config=config, loader=loader
    )
    rows = read_rows(output)
    scored = [r for r in rows if not r["error"]]
    assert scored and all(r["scored_by"] == "fallback" for r in scored)
    assert all(r["model_version"] == "tiny/1" for r in scored)
    # the CLI has no retries: the fallback scores at once, and each row says why
    assert {r["fallback_reason"] for r in scored} == {
        "primary_load_failed: ConnectionError: registry unreachable for models:/tiny@champion"
    }
    assert manifest["metrics"]["fallback_count"] == 10
    assert manifest["models"]["primary"]["load_error"].startswith("ConnectionError")
    assert manifest["models"]["circuit"]["state"] == "open"


def test_nan_primary_opens_the_breaker(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    output = tmp_path / "out"
    loader = loader_of(
        {
            "models:/tiny@champion": broken_model("tiny/2"),
            "models:/tiny@fallback": loaded_model("tiny/1"),
        }
    )
    manifest = score_batch(
        "models:/tiny@champion", str(image_dir), str(output), config=config, loader=loader
    )
    rows = [r for r in read_rows(output) if not r["error"]]
    assert len(rows) == 10 and {r["scored_by"] for r in rows} == {"fallback"}
    assert {r["model_version"] for r in rows} == {"tiny/1"}
    # the batches the primary returned NaN for, then the batches the open breaker sent
    reasons = [r["fallback_reason"] for r in rows]
    assert reasons[0] == "primary_failed: non_finite_logits: NaN or inf logits"
    assert reasons[-1].startswith("circuit_open: error rate")
    circuit = manifest["models"]["circuit"]
    assert circuit["state"] == "open" and circuit["trips"] == 1
    assert "error rate" in circuit["reason"]


def test_no_model_at_all_commits_nothing(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    output = tmp_path / "out"
    with pytest.raises(ScoringError, match="no model can score"):
        score_batch(
            "models:/tiny@champion",
            str(image_dir),
            str(output),
            config=config,
            loader=loader_of({}),
        )
    assert not list((output / "shards").glob("*"))
    assert not (output / "_SUCCESS").exists()


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/pills@champion", "models:/pills@fallback"),
        ("models:/pills/3", "models:/pills@fallback"),
        ("models:/pills@fallback", None),
        ("models:/m-0123abc", None),
        ("runs:/abc/model", None),
    ],
)
def test_fallback_for(uri: str, expected: str | None) -> None:
    assert fallback_for(uri, "fallback") == expected


def test_schema_has_the_required_columns() -> None:
    names = set(PREDICTION_SCHEMA.names)
    assert {
        "key",
        "label",
        "confidence",
        "topk_labels",
        "topk_probs",
        "model_version",
        "needs_review",
        "error",
        "scored_by",
    } <= names
    assert PREDICTION_SCHEMA.field("topk_probs").type == pa.list_(pa.float32())


def test_serving_config_file_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATSD_PORT", "8125")
    config = load_scoring_config(overrides=["batch_size=8", "runtimes=[torchscript,eager]"])
    assert config.batch_size == 8 and config.runtimes == ["torchscript", "eager"]
    assert config.statsd.port == 8125 and config.circuit.window == 50
    with pytest.raises(ConfigError, match="runtimes"):
        load_scoring_config(overrides=["runtimes=[tensorrt]"])


def test_tta_averages_the_calibrated_probabilities_of_four_quarter_turns() -> None:
    from rxvision.serving.batch import tta_probs
    from rxvision.serving.calibration import softmax as calibrated
    from rxvision.serving.model import EagerPredictor

    predictor = EagerPredictor(loaded_model().model, torch.device("cpu"))
    images = torch.randn(3, 3, IMG, IMG)
    probs, ok = tta_probs(predictor, images, 2.0, 4)
    turns = [predictor.predict(torch.rot90(images, k, dims=(2, 3))) for k in range(4)]
    expected = np.mean([calibrated(t, 2.0) for t in turns], axis=0)
    assert ok.all() and np.allclose(probs, expected, atol=1e-6)
    single, _ = tta_probs(predictor, images, 2.0, 1)
    assert np.allclose(single, calibrated(turns[0], 2.0), atol=1e-6)
    assert not np.allclose(single, probs)  # the turns did change something
