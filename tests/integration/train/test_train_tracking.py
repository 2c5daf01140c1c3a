"""A tiny real run against the stack: MLflow params, lineage tags, metrics, plots and the
model; full checkpoints in S3; resuming past a corrupt checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient
from train_helpers import CPU_QUICK, TINY

from rxvision.stack.local_stack import LocalStack
from rxvision.storage.s3 import S3Store
from rxvision.train.checkpoints import BEST, CheckpointStore, step_name
from rxvision.train.config import TrainConfig, load_train_config
from rxvision.train.result import TrainResult
from rxvision.train.run import train

pytestmark = pytest.mark.integration

BUCKET = "s3://rxvision-checkpoints"


@dataclass
class TrackedRun:
    result: TrainResult
    cfg: TrainConfig
    data: Path
    tracking_uri: str


@pytest.fixture(scope="module")
def tracked_run(stack: LocalStack, tiny_pills: Path) -> Iterator[TrackedRun]:
    """One tiny run: 2 epochs, a step checkpoint every 2 steps, into the stack."""
    patch = pytest.MonkeyPatch()
    env = stack.client_env()
    # undo() in finally: a failed run must not leave the stack's endpoint in the
    # environment of every later test (moto unit tests then hit the real S3 and get 403).
    try:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.setenv("RXVISION_HOME", str(stack.home.root))
        cfg = load_train_config(
            CPU_QUICK,
            [*TINY, "training.epochs=2", "checkpoint.every_n_steps=2", f"checkpoint.root={BUCKET}"],
        )
        result = train(
            cfg,
            tiny_pills,
            run_id="it-tracked",
            snapshot_rev="snapshot-2024-05-01",
            snapshot_hash="c0ffee" * 10,
            progress_bar=False,
        )
        yield TrackedRun(result, cfg, tiny_pills, env["MLFLOW_TRACKING_URI"])
    finally:
        patch.undo()


def test_run_is_tracked_in_mlflow(tracked_run: TrackedRun) -> None:
    result = tracked_run.result
    steps_per_epoch = result.extra["steps_per_epoch"]
    assert steps_per_epoch >= 2
    assert result.global_step == result.max_steps == 2 * steps_per_epoch
    client = MlflowClient(tracked_run.tracking_uri)
    run = client.get_run(result.mlflow_run_id or "")
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["model.architecture"] == "mobilenet_v3_small"
    assert params["training.optimizer.name"] == "AdamW"
    assert params["data.img_size"] == "32"
    assert tags["rxvision.run_id"] == "it-tracked"
    assert tags["dataset.snapshot_rev"] == "snapshot-2024-05-01"
    assert tags["dataset.content_hash"] == "c0ffee" * 10
    assert tags["version.torch"] == torch.__version__
    assert {"version.torchvision", "version.pytorch-lightning", "git.commit"} <= set(tags)
    for key in ("train/loss", "val/loss", "val/top1", "val/top5", "val/macro_f1", "val/ece"):
        assert client.get_metric_history(run.info.run_id, key), key
    for key in ("train/grad_norm", "perf/samples_per_s", "perf/cpu_rss_mb", "train/lr"):
        assert client.get_metric_history(run.info.run_id, key), key
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 6
    assert any(k.startswith("val/recall/ndc-") for k in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {
        "plots/confusion_matrix.png",
        "plots/loss_curve.png",
        "plots/confused_pairs.png",
    }
    # calibration fitted on validation, stored with the model; pairs and splits logged
    assert "final/temperature" in run.data.metrics
    assert "final/test_ece_uncalibrated" in run.data.metrics
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert logged == {"eval/confused_pairs.json"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "data")} == {"data/splits.json"}
    # one reference photo per class (train split) for the review gallery, and its index
    references = {a.path for a in client.list_artifacts(run.info.run_id, "references")}
    assert "references/index.json" in references
    assert len(references) == len(result.classes) + 1
    local = Path(client.download_artifacts(run.info.run_id, "plots/loss_curve.png"))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == [
        f"checkpoints/{BEST}"
    ]


def test_logged_model_loads_and_predicts(tracked_run: TrackedRun) -> None:
    result = tracked_run.result
    assert result.model_uri and result.model_uri.startswith("models:/")
    mlflow.set_tracking_uri(tracked_run.tracking_uri)
    net = mlflow.pytorch.load_model(result.model_uri)
    with torch.no_grad():
        logits = net(torch.randn(5, 3, 32, 32))
    assert logits.shape == (5, 3)
    # the serving loader reads the contract and the calibration stored with it
    from rxvision.serving.model_loading import load_model

    loaded = load_model(result.model_uri, tracking_uri=tracked_run.tracking_uri)
    assert loaded.spec == tracked_run.cfg.data.image_spec
    assert loaded.temperature == pytest.approx(result.metrics["temperature"])
    assert loaded.review_threshold == pytest.approx(result.metrics["review_threshold"])


def test_checkpoints_are_in_s3(tracked_run: TrackedRun) -> None:
    result = tracked_run.result
    keys = {k.rsplit("/", 1)[-1] for k in S3Store().list_keys(f"{BUCKET}/it-tracked/")}
    assert {BEST, step_name(result.global_step)} <= keys
    assert result.checkpoint_uri == f"{BUCKET}/it-tracked/{step_name(result.global_step)}"
    # a full checkpoint: weights, optimizer, scheduler, loops, RNG
    store = CheckpointStore(BUCKET, "it-tracked", staging_root=tracked_run.data.parent / "staging")
    last = result.global_step
    data = torch.load(store.fetch(step_name(last)), map_location="cpu", weights_only=True)
    assert {"state_dict", "optimizer_states", "lr_schedulers", "loops", "rxvision_rng"} <= set(data)
    assert data["global_step"] == last


def test_resume_falls_back_from_a_corrupt_checkpoint(
    tracked_run: TrackedRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest checkpoint in S3 is torn: training resumes from the one before it."""
    store = S3Store()
    last = tracked_run.result.global_step
    good = step_name(last)
    torn = store.get_bytes(f"{BUCKET}/it-tracked/{good}")[:4096]
    store.put_bytes(f"{BUCKET}/it-tracked/{step_name(last + 1)}", torn)
    cfg = load_train_config(
        CPU_QUICK,
        [*TINY, "training.epochs=3", "checkpoint.every_n_steps=2", f"checkpoint.root={BUCKET}"],
    )
    result = train(cfg, tracked_run.data, run_id="it-tracked", progress_bar=False)
    assert result.resumed_from == f"{BUCKET}/it-tracked/{good}"
    # the new budget: 3 epochs
    assert result.global_step == 3 * tracked_run.result.extra["steps_per_epoch"]
    # the same MLflow run went on
    assert result.mlflow_run_id == tracked_run.result.mlflow_run_id
