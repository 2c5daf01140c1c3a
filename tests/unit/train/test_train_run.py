"""The training CLI's wiring: overrides, the summary, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rxvision.home import repo_root
from rxvision.train.result import TrainResult

pytestmark = pytest.mark.unit


def test_cli_passes_config_overrides_and_writes_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rxvision.cli import train as train_cli

    calls: dict[str, Any] = {}

    def fake_train(cfg: Any, data: Any, **kwargs: Any) -> TrainResult:
        calls.update(cfg=cfg, data=data, **kwargs)
        return TrainResult(
            run_id=kwargs["run_id"],
            global_step=12,
            max_steps=12,
            metrics={"val_top1": 0.97},
            checkpoint_uri="s3://rxvision-checkpoints/r1/step-00000012.ckpt",
            best_checkpoint_uri=None,
            resumed_from=None,
            precision="32-true",
            classes=["a", "b"],
            seconds=1.0,
            model_uri="models:/m-1",
        )

    monkeypatch.setattr("rxvision.train.run.train", fake_train)
    summary = tmp_path / "out" / "summary.json"
    result = CliRunner().invoke(
        train_cli.app,
        [
            "--config",
            str(repo_root() / "configs" / "cpu-quick.yaml"),
            "--data",
            # a shard set: passed through as is (an image folder is validated first)
            "s3://rxvision-data/features/abc",
            "training.epochs=3",
            "--summary",
            str(summary),
            "--run-id",
            "r1",
            "--snapshot-rev",
            "snap-2024-01-01",
        ],
    )
    assert result.exit_code == 0, result.output
    assert calls["cfg"].training.epochs == 3
    assert calls["data"] == "s3://rxvision-data/features/abc"
    assert calls["run_id"] == "r1" and calls["snapshot_rev"] == "snap-2024-01-01"
    written = json.loads(summary.read_text())
    assert {"run_id", "model_uri", "metrics", "checkpoint_uri", "global_step"} <= set(written)
    assert written["metrics"]["val_top1"] == 0.97


def test_cli_maps_config_errors_to_exit_code_2(tmp_path: Path) -> None:
    from rxvision.cli import train as train_cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  epoch: 3\n")
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "rxvision.cli.train", "--config", str(bad), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=repo_root(),
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "training.epoch" in proc.stderr
    assert train_cli.train.__doc__


def test_train_applies_overrides_before_anything_else(tmp_path: Path) -> None:
    from rxvision.errors import ConfigError
    from rxvision.train.config import TrainConfig
    from rxvision.train.run import train

    with pytest.raises(ConfigError, match=r"training\.epoch"):
        train(TrainConfig(), tmp_path, ["training.epoch=3"])
