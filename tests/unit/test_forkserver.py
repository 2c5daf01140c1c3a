"""Worker pools load the caller's main script once, in the forkserver, not once per
worker (CPython 3.11's own ``__main__`` preload never happens): a real script, run as a
user runs one, counts how many processes executed its top level."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rxvision.forkserver import MAIN_ENV, MAIN_LOADER, main_preload

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, sys
from pathlib import Path
# the top level: every process that runs it leaves its pid
with open(sys.argv[1] + "/ran", "a") as log:
    log.write(f"{os.getpid()}\\n")

import beside  # a module next to the script, as bench/ scripts import harness
from rxvision.data.synth import generate_dataset
from rxvision.data.validation import DataValidator, ValidationPolicy

if __name__ == "__main__":
    data = Path(sys.argv[1]) / "pills"
    generate_dataset(data, classes=2, per_class=6, size=240, seed=3, workers=2)
    result = DataValidator(ValidationPolicy(), workers=3).validate_dataset(data)
    print("files", result.summary.files)
"""


def test_the_main_script_runs_once_in_the_server_not_in_each_worker(tmp_path: Path) -> None:
    script = tmp_path / "validate_pills.py"
    script.write_text(textwrap.dedent(SCRIPT))
    (tmp_path / "beside.py").write_text("VALUE = 1\n")
    env = {k: v for k, v in os.environ.items() if k != MAIN_ENV}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "files 12" in done.stdout
    runs = (tmp_path / "ran").read_text().split()
    # the script itself and the forkserver; its 2 generator and 3 decode workers never
    # (the server has the script's folder on its path, else its import of beside.py fails
    # there and every worker re-runs the script)
    assert len(runs) == 2, runs
    assert "could not preload" not in done.stderr
    assert len(set(runs)) == 2


def test_a_script_is_preloaded_by_path_and_a_module_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "job.py"
    module = type(sys)("__main__")
    module.__file__ = str(script)
    module.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", module)
    monkeypatch.delenv(MAIN_ENV, raising=False)
    assert main_preload() == [MAIN_LOADER]
    told = json.loads(os.environ[MAIN_ENV])
    assert told == {"path": str(script), "argv": sys.argv, "sys_path": sys.path}

    spec = type("Spec", (), {"name": "rxvision.cli.main"})()
    module.__spec__ = spec
    assert main_preload() == ["rxvision.cli.main"]
    spec.name = "pytest.__main__"  # python -m pkg: workers never re-run pkg.__main__
    assert main_preload() == []


THREADS_SCRIPT = """
import cv2
import numpy as np
from concurrent.futures import ProcessPoolExecutor
from rxvision.forkserver import worker_context

def worker_threads(size: int) -> int:
    # an OpenCV call in the worker: it must neither hang nor start a pool of its own
    cv2.resize(np.zeros((size, size, 3), np.uint8), (size // 2, size // 2))
    return cv2.getNumThreads()

if __name__ == "__main__":
    # the caller's OpenCV pool has its threads before any worker starts
    cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (999, 999))
    with ProcessPoolExecutor(2, mp_context=worker_context()) as pool:
        print("workers", *pool.map(worker_threads, [1000] * 4))
    print("caller", cv2.getNumThreads())
"""


def test_pool_workers_run_one_opencv_thread_and_the_caller_keeps_its_own(
    tmp_path: Path,
) -> None:
    script = tmp_path / "threads.py"
    script.write_text(textwrap.dedent(THREADS_SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["workers"].split() == ["1"] * 4
    # the setting lives in the server only: the caller's pool is OpenCV's default
    assert int(lines["caller"]) == __import__("cv2").getNumThreads()
