"""Helpers of the training integration tests (imported by name: tests are not a package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rxvision.data.synth import generate_dataset
from rxvision.home import repo_root

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

CPU_QUICK = repo_root() / "configs" / "cpu-quick.yaml"

# The mechanics tests (tracking, checkpoints, resume, DDP) need steps, not accuracy:
# MobileNetV3-small (full checkpoints of ~20 MB, not ResNet-18's ~135 MB) at 32 px on a
# few dozen images, no DataLoader workers, the whole frame (feature sets built with a
# plain PreprocessConfig).
TINY = [
    "model.architecture=mobilenet_v3_small",
    "data.img_size=32",
    "data.localize.enabled=false",
    "data.num_workers=0",
    "data.val_fraction=0.25",
    "training.batch_size=4",
    "training.log_every_n_steps=1",
    "trainer.precision=32-true",
    "trainer.progress_every_n_steps=2",
]


def distinct_products(out: Path, products: int, per_class: int, size: int, seed: int) -> Path:
    """Synthetic pills of ``products`` products that differ in shape and colour.

    ``generate_dataset`` draws look-alike pairs (classes 2g and 2g+1 differ only in the
    imprint); one product of each pair is kept.
    """
    result = generate_dataset(
        out, classes=2 * products, per_class=per_class, size=size, seed=seed, workers=2
    )
    for index, label in enumerate(result.labels):
        if index % 2:
            shutil.rmtree(out / label)
    (out / "manifest.parquet").unlink()
    return out


def cli_command(*args: str) -> list[str]:
    """``python -m rxvision.cli.train ARGS`` (Lightning's DDP re-runs the same command)."""
    return [sys.executable, "-m", "rxvision.cli.train", *args]


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the train CLI to completion; fail the test with its output when it fails."""
    proc = subprocess.run(
        cli_command(*args),
        env=env,
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-6000:]}"
    return proc


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
