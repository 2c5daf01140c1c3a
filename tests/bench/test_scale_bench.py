"""bench/scale.py's own measuring parts: the memory of a stage's whole process tree, and
the goal figures read from the stages."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from report import render_scale  # noqa: E402

# by path: "scale" is also the name of a test folder
_spec = importlib.util.spec_from_file_location("bench_scale", REPO / "bench" / "scale.py")
assert _spec and _spec.loader
bench_scale = sys.modules["bench_scale"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_scale)
Stage, TreeMemory, summarize = bench_scale.Stage, bench_scale.TreeMemory, bench_scale.summarize

pytestmark = pytest.mark.unit

# a parent holding ~40 MB that starts a child holding ~200 MB: the tree's peak is their sum
TREE = """
import subprocess, sys, time
held = bytearray(40 * 2**20)
child = "import time; b = bytearray(200 * 2**20); time.sleep(1.0)"
subprocess.run([sys.executable, "-c", child], check=True)
"""


def test_tree_memory_counts_the_workers_of_a_stage() -> None:
    proc = subprocess.Popen([sys.executable, "-c", TREE], start_new_session=True)
    memory = TreeMemory(proc.pid)
    assert proc.wait(timeout=60) == 0
    peak = memory.stop()
    assert 240 <= peak < 600, peak


def test_summary_sums_the_data_stages_and_compares_cost_per_image() -> None:
    stages = [
        Stage(10_000, "pull", 10.0, 100),
        Stage(10_000, "validate", 5.0, 100),
        Stage(10_000, "preprocess", 20.0, 100),
        Stage(100_000, "pull", 90.0, 100),
        Stage(100_000, "validate", 50.0, 100),
        Stage(100_000, "preprocess", 260.0, 100),
    ]
    summary = summarize(stages)
    assert summary["largest"] == 100_000 and summary["data_stages_s"] == 400.0
    assert summary["cost_per_image_ratio"] == {"pull": 0.9, "validate": 1.0, "preprocess": 1.3}
    table = render_scale(
        {"stages": [{**s.__dict__, "images_per_s": s.images_per_s} for s in stages]}
    )
    assert "| 100,000 | preprocess | 260.0 | 385 | 100 |" in table
