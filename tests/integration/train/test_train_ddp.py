"""Two DDP processes on CPU (gloo), started by Lightning from the CLI, reading a shard set
of the feature store in S3, with gradual unfreezing (parameters join the graph mid-run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from train_helpers import CPU_QUICK, TINY, run_cli

from rxvision.data.feature_store import FeatureStore, PreprocessConfig

pytestmark = pytest.mark.integration


def test_two_process_ddp_on_cpu_from_the_feature_store(
    stack_env: dict[str, str], cli_env: dict[str, str], tiny_pills: Path, tmp_path: Path
) -> None:
    store = FeatureStore("s3://rxvision-data/features-train-ddp")
    manifest, _ = store.materialize(tiny_pills, "d" * 64, PreprocessConfig(img_size=32), workers=1)
    summary = tmp_path / "summary.json"
    proc = run_cli(
        [
            "--config",
            str(CPU_QUICK),
            "--data",
            store.prefix(manifest.key),
            *TINY,
            "trainer.devices=2",
            "trainer.strategy=ddp",
            "training.epochs=2",
            "model.fine_tuning.gradual_unfreeze=true",
            "model.fine_tuning.unfreeze_at_epoch=1",
            f"checkpoint.root={tmp_path / 'ckpt'}",
            "checkpoint.every_n_steps=1",
            "--run-id",
            "it-ddp",
            "--summary",
            str(summary),
        ],
        {**cli_env, **stack_env},
        timeout=400,
    )
    result = json.loads(summary.read_text())
    # the training split over 2 ranks (the sampler splits it), batches of 4, 2 epochs
    steps = result["global_step"]
    assert steps == result["max_steps"] == 2 * result["extra"]["steps_per_epoch"]
    assert result["data"] == f"feature set {store.prefix(manifest.key)}"
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr
    assert "backbone block 0 unfrozen" in proc.stderr
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.params["run.world_size"] == "2"
    assert run.data.tags["dataset.content_hash"] == "d" * 64  # from the shard set
    assert run.info.status == "FINISHED"
    folder = tmp_path / "ckpt" / "it-ddp"
    assert (folder / f"step-{steps:08d}.ckpt").is_file() and (folder / "best.ckpt").is_file()
