"""Exports, batch scoring from S3 to S3, the circuit breaker, and a killed run rerun,
against the real MLflow server, SeaweedFS and statsd receiver."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from mlflow.tracking import MlflowClient
from serving_helpers import wait_for

from rxvision.serving.evaluation import evaluate_model
from rxvision.serving.exports import FP32_TOLERANCE
from rxvision.serving.int8_record import INT8_GATE
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.scoring_run import score_batch
from rxvision.serving.shard import score_shard
from rxvision.serving.version_export import export_version
from rxvision.stack.local_stack import LocalStack
from rxvision.storage.s3 import S3Store
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.integration

FAST = {"shard_size": 8, "batch_size": 4, "download_workers": 4, "device": "cpu"}


def output_uri() -> str:
    return f"s3://rxvision-predictions/it-{uuid.uuid4().hex[:8]}"


def read_rows(output: str) -> list[dict]:  # type: ignore[type-arg]
    store = Storage()
    rows: list[dict] = []  # type: ignore[type-arg]
    for uri in store.list(f"{output}/shards"):
        rows.extend(pq.read_table(io.BytesIO(store.read(uri))).to_pylist())
    return rows


def test_exports_match_eager_and_are_logged_with_the_version(
    stack_env: dict[str, str], models: dict[str, str], pills: Path
) -> None:
    name, version = models["name"], models["good"]
    result = export_version(
        f"models:/{name}/{version}", image_folder=pills, calibration_folder=pills
    )
    assert {r.runtime for r in result.exports} >= {"torchscript", "onnxruntime"}
    for export in result.exports:
        if export.runtime != "onnxruntime-int8":
            assert export.parity.images == 18
            assert export.parity.max_abs_diff <= FP32_TOLERANCE, export.parity.describe()
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    mv = client.get_model_version(name, version)
    logged = {a.path for a in client.list_artifacts(mv.run_id, "serving")}
    assert {"serving/model.onnx", "serving/model.torchscript.pt"} <= logged
    assert float(mv.tags["rxvision.serving.onnxruntime.max_abs_diff"]) <= FP32_TOLERANCE
    assert float(mv.tags["rxvision.serving.torchscript.max_abs_diff"]) <= FP32_TOLERANCE
    kept = mv.tags["rxvision.serving.int8.kept"] == "true"
    assert kept == ("serving/model.int8.onnx" in logged)
    # judged on calibration and the review queue too, and only a kept model says so
    assert {"ece_fp32", "ece_int8", "silent_errors_int8", "agreement"} <= {
        key.rsplit(".", 1)[1] for key in mv.tags if key.startswith("rxvision.serving.int8.")
    }
    assert (mv.tags.get("rxvision.serving.int8.gate") == INT8_GATE) == kept
    # the same version re-scored on a labelled folder (the registry's champion comparator)
    metrics = evaluate_model(f"models:/{name}/{version}", pills)
    assert 0.0 <= metrics["test_top1"] <= 1.0 and 0.0 <= metrics["test_ece"] <= 1.0
    assert len([k for k in metrics if k.startswith("test_recall_")]) == 3
    assert metrics["images"] == 18


def test_batch_with_corrupt_images_completes_with_error_rows(
    stack: LocalStack, stack_env: dict[str, str], models: dict[str, str], input_uri: str
) -> None:
    out = output_uri()
    config = ScoringConfig(**FAST)
    manifest = score_batch(f"models:/{models['name']}@champion", input_uri, out, config=config)
    rows = read_rows(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == manifest["rows"] == 20
    assert all(k.startswith(input_uri) for k in keys)
    errors = {
        k.rsplit("/", 1)[1]: r["error"] for k, r in zip(keys, rows, strict=True) if r["error"]
    }
    assert set(errors) == {"truncated.jpg", "empty.jpg"}
    assert errors["truncated.jpg"].startswith("corrupt: ")
    assert errors["empty.jpg"].startswith("empty_file: ")
    scored = [r for r in rows if not r["error"]]
    assert {r["model_version"] for r in scored} == {f"{models['name']}/{models['good']}"}
    assert {r["scored_by"] for r in scored} == {"primary"}
    # the first preferred runtime the version has: its INT8 model when its export kept one
    tags = MlflowClient().get_model_version(models["name"], models["good"]).tags
    expected = "onnxruntime-int8" if tags.get("rxvision.serving.int8.gate") else "onnxruntime"
    assert {r["runtime"] for r in scored} == {expected}
    store = Storage()
    assert store.exists(f"{out}/_SUCCESS") and store.exists(f"{out}/_manifest.json")
    assert manifest["models"]["primary"]["runtime"] == expected
    latency = manifest["metrics"]["latency_ms"]
    assert latency["image"]["count"] == 18 and latency["batch"]["p95"] is not None
    assert manifest["metrics"]["error_rate"] == pytest.approx(0.1)

    def received() -> dict | None:  # type: ignore[type-arg]
        metrics = stack.metrics()
        counters, timers = metrics["counters"], metrics["timers"]
        done = (
            counters.get("rxvision.scoring.images", 0) >= 20
            and "rxvision.scoring.run.images_per_s" in metrics["gauges"]
        )
        return metrics if done and "rxvision.scoring.image_ms" in timers else None

    metrics = wait_for(received)
    assert metrics, f"statsd got: {stack.metrics()['counters']}"
    assert metrics["counters"]["rxvision.scoring.errors"] >= 2
    assert metrics["timers"]["rxvision.scoring.batch_ms"]["count"] >= 5
    assert "rxvision.scoring.run.latency.image.p99" in metrics["gauges"]


def test_circuit_breaker_switches_to_the_fallback(
    stack: LocalStack, stack_env: dict[str, str], models: dict[str, str], input_uri: str
) -> None:
    name = models["name"]
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    client.set_registered_model_alias(name, "champion", models["nan"])
    try:
        out = output_uri()
        config = ScoringConfig(
            **{**FAST, "runtimes": ["eager"]},
            circuit={"window": 8, "error_rate": 0.5, "min_calls": 4},
        )
        manifest = score_batch(f"models:/{name}@champion", input_uri, out, config=config)
    finally:
        client.set_registered_model_alias(name, "champion", models["good"])
    rows = [r for r in read_rows(out) if not r["error"]]
    assert len(rows) == 18
    assert {r["scored_by"] for r in rows} == {"fallback"}
    assert {r["model_version"] for r in rows} == {f"{name}/{models['good']}"}
    assert manifest["models"]["circuit"]["state"] == "open"
    assert manifest["metrics"]["fallback_count"] == 18
    by_model = manifest["shards"][0]["rows_by_model"]
    assert by_model == {f"fallback:{name}/{models['good']}": 8}

    # a primary that cannot be loaded at all
    keys = [k for k in Storage().list(input_uri) if k.endswith(".jpg")][:3]
    shard = score_shard(
        f"models:/{name}/999",
        keys,
        output_uri(),
        "shard-00000",
        config=ScoringConfig(**FAST),
        fallback_uri=f"models:/{name}@fallback",
    )
    assert shard.summary["models"]["primary"]["load_error"].startswith("NotFound")
    assert shard.summary["fallback_count"] == 3

    def alerted() -> bool:
        counters = stack.metrics()["counters"]
        return (
            counters.get("rxvision.scoring.alert.circuit_open", 0) >= 2
            and counters.get("rxvision.scoring.alert.primary_load_failed", 0) >= 1
        )

    assert wait_for(alerted), stack.metrics()["counters"]


KILLER = """
import os, signal, sys
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.scoring_run import score_batch

def progress(shard_id, done):
    # die mid-shard: two shards committed, the third half scored
    if shard_id == "shard-00002" and done >= 2:
        os.kill(os.getpid(), signal.SIGKILL)

config = ScoringConfig(
    shard_size=4, batch_size=2, download_workers=2, runtimes=["eager"], device="cpu"
)
score_batch(sys.argv[1], sys.argv[2], sys.argv[3], config=config, progress=progress)
"""


def test_killed_run_rerun_writes_each_row_exactly_once(
    stack: LocalStack,
    stack_env: dict[str, str],
    models: dict[str, str],
    input_uri: str,
    tmp_path: Path,
) -> None:
    out = output_uri()
    model = f"models:/{models['name']}@champion"
    env = {**os.environ, **stack_env, "NO_ALBUMENTATIONS_UPDATE": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLER), model, input_uri, out],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    store = Storage()
    committed = sorted(Path(u).name for u in store.list(f"{out}/shards"))
    assert committed == ["shard-00000.parquet", "shard-00001.parquet"]
    assert not store.exists(f"{out}/_SUCCESS")

    summary = tmp_path / "summary.json"
    rerun = subprocess.run(
        [
            sys.executable,
            "-m",
            "rxvision.cli.score",
            "--model",
            model,
            "--input",
            input_uri,
            "--output",
            out,
            "--summary",
            str(summary),
            "shard_size=4",
            "batch_size=2",
            "runtimes=[eager]",
            "device=cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert result["skipped_shards"] == ["shard-00000", "shard-00001"]
    keys = [r["key"] for r in read_rows(out)]
    listed = [k for k in store.list(input_uri) if k.endswith(".jpg")]
    assert sorted(keys) == sorted(listed) and len(keys) == len(set(keys)) == 20
    assert result["rows"] == 20 and len(result["shards"]) == 5
    assert store.exists(f"{out}/_SUCCESS")
    assert not [u for u in S3Store().list_keys(f"{out}/_tmp/")]
    # the review gallery: each needs_review row, crops made under the version's contract
    # (read from MLflow), served as HTML through a presigned link
    review = [r for r in read_rows(out) if r["needs_review"] and not r["error"]]
    assert (result["review_uri"], result["needs_review"]) == (
        f"{out}/review/index.html",
        len(review),
    )
    page = requests.get(S3Store().presigned_get(result["review_uri"]), timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert f'<span id="review-count">{len(review)}</span>' in page.text
    assert page.text.count('<article class="item"') == len(review)
    assert "the whole photo is shown" not in page.text  # the model's spec was found
