"""training.batch_size_finder: off by default, skipped with a log line on CPU and under
DDP, and a resumed run reuses the size recorded beside its checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rxvision.train.batch_finder import record_batch_size, recorded_batch_size, training_batch_size
from rxvision.train.checkpoints import CheckpointStore
from rxvision.train.config import BatchSizeFinderConfig, TrainConfig

pytestmark = pytest.mark.unit

ON = BatchSizeFinderConfig(enabled=True)


def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(str(tmp_path / "ckpt"), "run-1", staging_root=tmp_path / "staging")


def never() -> None:
    raise AssertionError("the finder must not build a module here")


def decide(tmp_path: Path, finder: BatchSizeFinderConfig, accelerator: str, world: int) -> int:
    return training_batch_size(
        finder,
        32,
        accelerator=accelerator,
        world=world,
        store=store(tmp_path),
        datamodule=None,
        make_module=never,  # type: ignore[arg-type]
        precision="32-true",
    )


def test_off_by_default_in_the_training_config() -> None:
    assert TrainConfig().training.batch_size_finder.enabled is False


def test_skipped_with_a_log_line_on_cpu_and_under_ddp(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rxvision.train.batch_finder")
    assert decide(tmp_path, BatchSizeFinderConfig(), "gpu", 1) == 32  # off: nothing logged
    assert not caplog.text
    assert decide(tmp_path, ON, "cpu", 1) == 32
    assert "this run trains on cpu: skipped, training.batch_size=32 is used" in caplog.text
    assert decide(tmp_path, ON, "gpu", 2) == 32
    assert "uses 2 devices (DDP" in caplog.text


def test_a_resumed_run_reuses_the_recorded_size(tmp_path: Path) -> None:
    checkpoints = store(tmp_path)
    assert recorded_batch_size(checkpoints) is None
    record_batch_size(checkpoints, 256, 32)
    assert recorded_batch_size(checkpoints) == 256
    assert decide(tmp_path, ON, "gpu", 1) == 256
    assert checkpoints.list_steps() == []  # the record is no step checkpoint
