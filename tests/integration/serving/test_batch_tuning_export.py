"""Batch-size tuning at export against the real MLflow server and SeaweedFS: the version
gets its tags and table, scoring uses the tagged size unless told otherwise, and a
tuning that fails leaves the export intact."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from serving_helpers import register

import rxvision.serving.version_export as version_export
from rxvision.serving.batch_tuning import ARTIFACT_DIR, BatchTuningConfig
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.scoring_run import score_batch
from rxvision.serving.version_export import export_version
from rxvision.stack.local_stack import LocalStack

pytestmark = pytest.mark.integration

TUNING = BatchTuningConfig(candidates=[1, 4, 8], warmup_batches=1, images_per_candidate=16)
RUNTIMES = ("eager", "torchscript", "onnxruntime")
FAST = {"shard_size": 8, "download_workers": 4, "device": "cpu", "runtimes": ["onnxruntime"]}


@pytest.fixture(scope="module")
def tuned(stack: LocalStack, classes: list[str], pills: Path) -> dict[str, str]:
    """A version of its own (the shared ones keep no tuned tags), exported and tuned."""
    uri = stack.client_env()["MLFLOW_TRACKING_URI"]
    with pytest.MonkeyPatch.context() as env:
        for key, value in stack.client_env().items():
            env.setenv(key, value)
        name = f"it-tune-{uuid.uuid4().hex[:6]}"
        version = register(stack.home, uri, name, classes, seed=0)
        MlflowClient(uri).set_registered_model_alias(name, "champion", version)
        export_version(f"models:/{name}/{version}", image_folder=pills, tuning=TUNING)
    return {"name": name, "version": version}


def test_export_tags_the_best_size_and_logs_the_table(
    stack_env: dict[str, str], tuned: dict[str, str], tmp_path: Path
) -> None:
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    mv = client.get_model_version(tuned["name"], tuned["version"])
    sizes = {r: int(mv.tags[f"rxvision.batch_size.{r}.cpu"]) for r in RUNTIMES}
    assert set(sizes.values()) <= {1, 4, 8}
    logged = {a.path for a in client.list_artifacts(mv.run_id, ARTIFACT_DIR)}
    assert logged == {f"{ARTIFACT_DIR}/batch_sizes.json", f"{ARTIFACT_DIR}/batch_sizes.png"}
    local = client.download_artifacts(mv.run_id, f"{ARTIFACT_DIR}/batch_sizes.json", str(tmp_path))
    table = json.loads(Path(local).read_text())
    rows = {(m["runtime"], m["device"], m["batch_size"]): m for m in table["measurements"]}
    assert set(rows) == {(r, "cpu", s) for r in RUNTIMES for s in (1, 4, 8)}
    assert all(m["images_per_s"] > 0 for m in rows.values())
    assert {(b["runtime"], b["batch_size"]) for b in table["best"]} == set(sizes.items())
    assert table["config"]["candidates"] == [1, 4, 8]


def test_scoring_uses_the_tagged_size_and_a_configured_size_wins(
    stack_env: dict[str, str],
    tuned: dict[str, str],
    input_uri: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    mv = client.get_model_version(tuned["name"], tuned["version"])
    tagged = int(mv.tags["rxvision.batch_size.onnxruntime.cpu"])
    model = f"models:/{tuned['name']}@champion"
    caplog.set_level(logging.INFO, logger="rxvision.serving.model_pool")
    out = f"s3://rxvision-predictions/it-tune-{uuid.uuid4().hex[:8]}"
    manifest = score_batch(model, input_uri, out, config=ScoringConfig(**FAST))
    primary = manifest["models"]["primary"]
    assert (primary["runtime"], primary["batch_size"]) == ("onnxruntime", tagged)
    assert primary["batch_size_source"] == "tuned"
    assert f"rxvision.batch_size.onnxruntime.cpu={tagged}" in caplog.text
    assert manifest["rows"] == 20

    caplog.clear()
    override = 3 if tagged != 3 else 5
    out = f"s3://rxvision-predictions/it-tune-{uuid.uuid4().hex[:8]}"
    config = ScoringConfig(**FAST, batch_size=override)
    manifest = score_batch(model, input_uri, out, config=config)
    primary = manifest["models"]["primary"]
    assert (primary["batch_size"], primary["batch_size_source"]) == (override, "config")
    assert f"scores in batches of {override} with onnxruntime on cpu" in caplog.text
    assert f"the tuned size {tagged} of rxvision.batch_size.onnxruntime.cpu is overridden" in (
        caplog.text
    )


def test_a_tuning_that_fails_never_fails_the_export(
    stack: LocalStack,
    stack_env: dict[str, str],
    classes: list[str],
    pills: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uri = stack_env["MLFLOW_TRACKING_URI"]
    name = f"it-tune-broken-{uuid.uuid4().hex[:6]}"
    version = register(stack.home, uri, name, classes, seed=2)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the timing machinery broke")

    monkeypatch.setattr(version_export, "tune_batch_sizes", broken)
    caplog.set_level(logging.WARNING, logger="rxvision.serving.version_export")
    result = export_version(f"models:/{name}/{version}", image_folder=pills, tuning=TUNING)
    assert {r.runtime for r in result.exports} == {"torchscript", "onnxruntime"}
    assert result.batch_sizes is None
    assert not [k for k in result.tags if k.startswith("rxvision.batch_size.")]
    mv = MlflowClient(uri).get_model_version(name, version)
    assert "rxvision.serving.onnxruntime.artifact" in mv.tags
    assert not [k for k in mv.tags if k.startswith("rxvision.batch_size.")]
    assert "batch tuning of" in caplog.text and "the timing machinery broke" in caplog.text
