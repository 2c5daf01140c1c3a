"""The registry against the real MLflow server: gates (on the test split, against the
champion on the same images), lineage tags, compare-and-set promotion, rollback,
idempotent registration."""

from __future__ import annotations

import json
import re
import uuid

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from registry_helpers import CLASSES, good_metrics, log_training_run
from typer.testing import CliRunner

from rxvision.registry import ModelQualityError, ModelRegistry, RegistryConfig, VersionMetadata
from rxvision.registry.aliases import ChampionChanged
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
    assert tags["rxvision.gate.champion_version"] == "none"
    assert registry.last_champion_version is None

    # idempotent: the same run again is the same version
    assert registry.register_model(first_uri, good_metrics(0.93)) == v1
    assert len(registry.list_versions()) == 1

    first = registry.promote(expected_champion=registry.last_champion_version)
    assert (first.champion, first.previous_champion, first.fallback) == (v1, None, None)

    # a poor model: refused, nothing registered, champion unchanged
    poor_uri, poor_run = log_training_run(stack.home, uri, "it-reg-poor", seed=1)
    poor = {"test_top1": 0.41, "test_ece": 0.31, **{f"test_recall_{c}": 0.1 for c in CLASSES}}
    with pytest.raises(ModelQualityError) as caught:
        registry.register_model(poor_uri, poor)
    message = str(caught.value)
    for expected in (
        "min_top1: 0.4100 (needs >= 0.8000) FAILED",
        "min_class_recall: 0.1000 (needs >= 0.8000) FAILED",
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

    # a class of the model (its logged classes) without a test image: refused by name
    unseen = good_metrics(0.95)
    del unseen[f"test_recall_{CLASSES[2]}"]
    with pytest.raises(ModelQualityError, match=f"no test image of: {CLASSES[2]}"):
        registry.register_model(poor_uri, unseen)

    # scored on the same images, the challenger is worse: refused with both numbers,
    # although its own test top-1 (0.95) beats the champion's registered 0.93
    champion_uri = f"models:/{registry.name}/{v1}"
    scores = {champion_uri: 0.95, poor_uri: 0.80}
    calls: list[str] = []

    def comparator(model: str) -> dict[str, float]:
        calls.append(model)
        return {"test_top1": scores[model], "test_ece": 0.05, "images": 120}

    with pytest.raises(ModelQualityError) as caught:
        registry.register_model(poor_uri, good_metrics(0.95), comparator=comparator)
    assert calls == [champion_uri, poor_uri]
    assert (
        "max_top1_regression: 0.1500 (needs <= 0.0100) FAILED "
        "(champion v1 top-1 0.9500 vs this model 0.8000 on 120 test images)"
    ) in str(caught.value)
    assert registry.last_champion_version == v1
    assert not client.search_model_versions(f"name='{registry.name}' and run_id='{poor_run}'")

    # a better one: challenger, then champion; the old champion becomes the fallback
    second_uri, _ = log_training_run(stack.home, uri, "it-reg-b", seed=2)
    scores[second_uri] = 0.96
    v2 = registry.register_summary(
        {"model_uri": second_uri, "metrics": good_metrics(0.95), "run_id": "it-reg-b"},
        VersionMetadata(snapshot_rev="pills-v2"),
        comparator=comparator,
    )
    judged = registry.last_champion_version
    assert judged == v1
    v2_tags = client.get_model_version(registry.name, v2).tags
    assert v2_tags["rxvision.dataset.snapshot_rev"] == "pills-v2"
    assert v2_tags["rxvision.gate.champion_version"] == v1

    # compare-and-set: a promotion expecting another champion moves nothing
    before = {v.version: v.aliases for v in registry.list_versions()}
    assert before == {v2: ("challenger",), v1: ("champion",)}
    for stale in (None, "99"):
        with pytest.raises(ChampionChanged, match=f"champion is v{v1}"):
            registry.promote(v2, expected_champion=stale)
        assert {v.version: v.aliases for v in registry.list_versions()} == before
    change = registry.promote(expected_champion=judged)
    assert (change.champion, change.previous_champion, change.fallback) == (v2, v1, v1)
    aliases = {v.version: v.aliases for v in registry.list_versions()}
    assert aliases == {v2: ("champion",), v1: ("fallback",)}
    assert registry.promote(v2).changed is False
    assert registry.promote(v2, expected_champion=v1).changed is False  # a retry

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

    # a second model, compared with the champion on held-out images through the scoring
    # path: the same weights score the same, so the regression gate passes with the count
    held_out = tmp_path / "held-out"
    rng = np.random.default_rng(0)
    for label in CLASSES:
        (held_out / label).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 255, size=(60, 60, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(held_out / label / f"{i}.jpg")
    second_uri, _ = log_training_run(stack.home, uri, "it-reg-cli-2", seed=3)
    summary.write_text(
        json.dumps({"model_uri": second_uri, "metrics": good_metrics(), "run_id": "y"})
    )
    compared = runner.invoke(
        model_cli.app,
        ["register", "--summary", str(summary), "--compare-on", str(held_out), name],
    )
    assert compared.exit_code == 0, compared.output
    said = " ".join(compared.output.split())  # rich wraps long lines
    found = re.search(r"top-1 ([0-9.]+) vs this model ([0-9.]+) on 6 test images", said)
    assert found and found.group(1) == found.group(2), said  # the same weights
