"""The GPU measurement scripts stay runnable between the rare sessions that have a GPU:
each runs here in its documented CPU smoke mode and writes a report with real numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def run_script(args: list[str], env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(
        args, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_gpu_train_script_compares_bf16_channels_last_with_fp32(tmp_path: Path) -> None:
    out = tmp_path / "gpu_train.json"
    smoke = {
        "ACCELERATOR": "cpu",
        "ARCH": "resnet18",
        "IMG": "64",
        "BATCH": "8",
        "STEPS": "6",
        "WORKERS": "0",
        "PER_CLASS": "8",
        "OUT": str(out),
    }
    printed = run_script(["bash", "bench/gpu_train.sh"], smoke)
    report = json.loads(out.read_text())
    assert report["architecture"] == "resnet18" and report["accelerator"] == "cpu"
    rows = report["results"]
    assert rows["project"]["precision"] == "bf16-mixed"
    assert rows["baseline"]["precision"] == "32-true"
    for row in rows.values():
        assert row["global_step"] == 6
        assert row["images_per_s"] > 0
    assert "speed-up:" in printed and str(out) in printed


def test_gpu_input_script_measures_loader_synthetic_and_scoring(tmp_path: Path) -> None:
    out = tmp_path / "gpu_input.json"
    args = ["--device", "cpu", "--arch", "resnet18", "--img", "64", "--steps", "2"]
    args += ["--batch", "4", "--workers", "0", "--images", "80", "--repeats", "1"]
    printed = run_script([sys.executable, "bench/gpu_input.py", *args, "--out", str(out)], {})
    report = json.loads(out.read_text())
    names = [row["name"] for row in report["results"]]
    assert names == [
        "synthetic tensors on the device",
        "project DataLoader (shards)",
        "scoring, eager autocast, batch 64",
    ]
    assert all(row["median"] > 0 for row in report["results"])
    assert "DataLoader / synthetic =" in printed
