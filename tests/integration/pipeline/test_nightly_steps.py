"""The nightly DAG's steps as plain functions against the real stack: snapshot ->
validate (report in S3, pass or fail) -> preprocess (a cache hit the second time), and
a model the gates refuse ends as NotPromoted with nothing registered."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from PIL import Image
from registry_helpers import log_training_run

from rxvision.data.settings import load_data_config, snapshot_store
from rxvision.data.synth import generate_dataset
from rxvision.errors import DataValidationError
from rxvision.home import Home
from rxvision.pipeline import nightly
from rxvision.stack.local_stack import LocalStack
from rxvision.storage.s3 import S3Store

pytestmark = pytest.mark.integration


def _snapshot(tmp_path: Path, tag: str, *, small_image: bool = False) -> None:
    data = tmp_path / tag
    generate_dataset(data, classes=3, per_class=10, size=224, seed=3, lookalikes=False)
    if small_image:
        label = sorted(p.name for p in data.iterdir() if p.is_dir())[0]
        Image.new("RGB", (100, 100), "white").save(data / label / "tiny.jpg")
    snapshot_store(load_data_config()).create(data, tag)


def test_validate_then_preprocess_with_a_cache_hit(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    tag = f"it-nightly-{uuid.uuid4().hex[:6]}"
    _snapshot(tmp_path, tag)
    snap = nightly.resolve_snapshot(tag)
    assert snap["rev"] == tag and snap["images"] == 30 and len(snap["classes"]) == 3
    pulled = nightly.pull_snapshot(tag)
    assert Path(pulled["path"]).is_dir()
    report_uri = f"s3://rxvision-artifacts/validation/it/{tag}.json"
    result = nightly.validate_snapshot(tag, report_uri, workers=1)
    assert result["ok"] and result["images_ok"] == 30 and result["rejected"] == 0
    report = json.loads(S3Store().get_bytes(report_uri))
    assert report["snapshot_rev"] == tag and report["ok"] is True
    first = nightly.preprocess(tag, report_uri)
    assert first["cache_hit"] is False and first["images"] == 30
    assert first["features_uri"].startswith("s3://rxvision-data/features/")
    again = nightly.preprocess(tag, report_uri)
    assert again == {**first, "cache_hit": True}


def test_a_failing_snapshot_keeps_its_report_and_names_it(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    tag = f"it-bad-{uuid.uuid4().hex[:6]}"
    _snapshot(tmp_path, tag, small_image=True)
    report_uri = f"s3://rxvision-artifacts/validation/it/{tag}.json"
    with pytest.raises(DataValidationError, match=report_uri.replace(".", r"\.")):
        nightly.validate_snapshot(tag, report_uri, workers=1)
    report = json.loads(S3Store().get_bytes(report_uri))
    assert report["ok"] is False
    assert any(r["path"].endswith("tiny.jpg") for r in report["rejected"])


def test_a_poor_model_is_not_promoted(
    stack: LocalStack, stack_env: dict[str, str], stack_home: Home
) -> None:
    from mlflow.tracking import MlflowClient

    from rxvision.registry.model_registry import ModelRegistry, load_registry_config

    model_uri, _ = log_training_run(stack_home, stack_env["MLFLOW_TRACKING_URI"], "it-poor", seed=5)
    summary_uri = f"s3://rxvision-artifacts/runs/it-poor-{uuid.uuid4().hex[:6]}/train_summary.json"
    summary = {
        "run_id": "it-poor",
        "model_uri": model_uri,
        "metrics": {"val_top1": 0.41, "val_ece": 0.3},
    }
    S3Store().put_bytes(summary_uri, json.dumps(summary).encode())

    evaluation = nightly.evaluate(summary_uri)
    assert evaluation["gates_pass"] is False
    assert any("min_top1: 0.4100" in g and "FAILED" in g for g in evaluation["gates"])

    registry = ModelRegistry(load_registry_config())
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    before = len(client.search_model_versions(f"name='{registry.name}'"))
    champion = registry.get_alias("champion")
    with pytest.raises(nightly.NotPromoted, match="min_top1"):
        nightly.register_and_promote(summary_uri, {"rev": "pills-v1", "content_hash": "c0ffee"})
    assert len(client.search_model_versions(f"name='{registry.name}'")) == before
    assert registry.get_alias("champion") == champion
