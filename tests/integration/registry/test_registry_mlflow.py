"""The registry against the real MLflow server: gates, lineage tags, aliases, rollback,
idempotent registration."""

from __future__ import annotations

import json
import uuid

import pytest
from mlflow.tracking import MlflowClient
from registry_helpers import CLASSES, good_metrics, log_training_run
from typer.testing import CliRunner

from rxvision.registry import ModelQualityError, ModelRegistry, RegistryConfig, VersionMetadata
from rxvision.stack.local_stack import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(stack_env: dict[str, str]) -> ModelRegistry:
    name = f"it-pills-{uuid.uuid4().hex[:6]}"
    return ModelRegistry(
        RegistryConfig(model_name=name, tracking_uri=stack_env["MLFLOW_TRACKING_URI"])
    )


def test_gates_aliases_and_rollback(
    registry: ModelRegistry,
    stack: LocalStack,
    stack_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = stack_env["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "scheduled__2026-11-26T02:00:00+00:00")
    monkeypatch.setenv("RXVISION_IMAGE", "rxvision-train:abc123")
    first_uri, first_run = log_training_run(stack.home, uri, "it-reg-a", seed=0)
    v1 = registry.register_model(first_uri, good_metrics(0.93))
    assert registry.list_versions()[0].aliases == ("challenger",)

    # lineage on the version
    tags = MlflowClient(uri).get_model_version(registry.name, v1).tags
    assert tags["rxvision.dataset.snapshot_rev"] == "pills-v1"
    assert tags["rxvision.dataset.content_hash"] == "c0ffee"
    assert tags["rxvision.training.run_id"] == "it-reg-a"
    assert tags["rxvision.training.mlflow_run_id"] == first_run
    assert tags["rxvision.airflow.dag_run_id"].startswith("scheduled__")
    assert tags["rxvision.container.image"] == "rxvision-train:abc123"
    assert len(tags["rxvision.config.hash"]) == 16 and tags["rxvision.eval.split"]
    assert "rxvision.version.torch" in tags and "rxvision.git.commit" in tags
    assert tags["gate.min_top1"] == "0.930000"

    # idempotent: the same run again is the same version
    assert registry.register_model(first_uri, good_metrics(0.93)) == v1
    assert len(registry.list_versions()) == 1

    first = registry.promote()
    assert (first.champion, first.previous_champion, first.fallback) == (v1, None, None)

    # a poor model: refused, nothing registered, champion unchanged
    poor_uri, poor_run = log_training_run(stack.home, uri, "it-reg-poor", seed=1)
    poor = {"val_top1": 0.41, "val_ece": 0.31, **{f"val_recall_{c}": 0.1 for c in CLASSES}}
    with pytest.raises(ModelQualityError) as caught:
        registry.register_model(poor_uri, poor)
    message = str(caught.value)
    for expected in (
        "min_top1: 0.4100 (needs >= 0.8000) FAILED",
        "min_class_recall: 0.1000 (needs >= 0.5000) FAILED",
        "max_ece: 0.3100 (needs <= 0.1500) FAILED",
        "max_top1_regression: 0.5200 (needs <= 0.0100) FAILED",
    ):
        assert expected in message
    client = MlflowClient(uri)
    assert not client.search_model_versions(f"name='{registry.name}' and run_id='{poor_run}'")
    assert registry.get_alias("champion").version == v1  # type: ignore[union-attr]

    # worse than the champion on the same split by more than the margin: refused
    with pytest.raises(ModelQualityError, match=r"max_top1_regression: 0\.0500"):
        registry.register_model(poor_uri, good_metrics(0.88))

    # a better one: challenger, then champion; the old champion becomes the fallback
    second_uri, _ = log_training_run(stack.home, uri, "it-reg-b", seed=2)
    v2 = registry.register_summary(
        {"model_uri": second_uri, "metrics": good_metrics(0.95), "run_id": "it-reg-b"},
        VersionMetadata(snapshot_rev="pills-v2"),
    )
    assert client.get_model_version(registry.name, v2).tags["rxvision.dataset.snapshot_rev"] == (
        "pills-v2"
    )
    change = registry.promote()
    assert (change.champion, change.previous_champion, change.fallback) == (v2, v1, v1)
    aliases = {v.version: v.aliases for v in registry.list_versions()}
    assert aliases == {v2: ("champion",), v1: ("fallback",)}
    assert registry.promote(v2).changed is False

    # rollback: the fallback is champion again
    back = registry.rollback()
    assert (back.champion, back.previous_champion) == (v1, v2)
    assert registry.get_alias("champion").version == v1  # type: ignore[union-attr]
    assert registry.get_alias("fallback") is None
    assert "rxvision.rolled_back_at" in client.get_model_version(registry.name, v2).tags


def test_model_cli_lists_and_promotes(
    registry: ModelRegistry, stack: LocalStack, stack_env: dict[str, str], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from rxvision.cli import model as model_cli

    uri = stack_env["MLFLOW_TRACKING_URI"]
    model_uri, _ = log_training_run(stack.home, uri, "it-reg-cli", seed=3)
    summary = tmp_path / "summary.json"
    summary.write_text(
        json.dumps({"model_uri": model_uri, "metrics": good_metrics(), "run_id": "x"})
    )
    runner = CliRunner()
    name = f"model_name={registry.name}"
    registered = runner.invoke(model_cli.app, ["register", "--summary", str(summary), name])
    assert registered.exit_code == 0, registered.output
    assert json.loads(registered.stdout.splitlines()[-1]) == {"name": registry.name, "version": "1"}
    promoted = runner.invoke(model_cli.app, ["promote", name])
    assert promoted.exit_code == 0, promoted.output
    listed = runner.invoke(model_cli.app, ["list", "--json", name])
    assert json.loads(listed.stdout)[0]["aliases"] == ["champion"]
    refused = runner.invoke(model_cli.app, ["rollback", name])
    assert refused.exit_code != 0 and "no 'fallback' version" in str(refused.exception)
