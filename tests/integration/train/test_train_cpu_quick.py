"""configs/cpu-quick.yaml learns the synthetic pills on a CPU (asserted on accuracy only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import CPU_QUICK, distinct_products

from rxvision.train.config import load_train_config
from rxvision.train.run import train

pytestmark = pytest.mark.integration


def test_cpu_quick_reaches_95_percent_top1(
    stack_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """6 products x 80 photos (128 px) of products that differ in shape and colour.

    Look-alike pairs (same shape and colour, told apart only by the imprint) are out of
    reach of a randomly initialised network in a few CPU minutes: see the header of
    configs/cpu-quick.yaml.
    """
    monkeypatch.setenv("RXVISION_CHECKPOINT_ROOT", "s3://rxvision-checkpoints")
    data = distinct_products(tmp_path / "pills", products=6, per_class=80, size=128, seed=2)
    result = train(load_train_config(CPU_QUICK), data, run_id="it-cpu-quick", progress_bar=False)
    assert len(result.classes) == 6
    assert result.global_step == result.max_steps
    assert result.metrics["val_top1"] >= 0.95, result.metrics
