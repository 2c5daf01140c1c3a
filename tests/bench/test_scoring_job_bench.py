"""bench/scoring_job.py's CPU split: where a run's CPU went (this process, the decode
workers started from the forkserver, the S3 server) and the ceiling it sets."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from report import render_cpu  # noqa: E402
from scoring_job import cpu_bound, cpu_per_image  # noqa: E402

from rxvision.forkserver import worker_context  # noqa: E402

pytestmark = pytest.mark.unit

BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"


def test_a_child_processes_cpu_counts_as_the_workers_not_this_process() -> None:
    def run() -> float:
        subprocess.run([sys.executable, "-c", BURN], check=True)
        return 4.0

    split = cpu_per_image(run)
    assert split["decode_workers"] >= 95.0, split  # 0.4 s over 4 images
    assert split["this_process"] < 20.0, split
    assert split["total"] == pytest.approx(
        split["this_process"] + split["decode_workers"] + split["s3_server"], abs=0.01
    )


def test_a_server_started_here_is_other_processes_not_the_workers() -> None:
    # bench_stack's servers are this process's children too: they are not the job's
    # it burns only once the measured run has begun: burning from its start, a slow
    # first snapshot of the machine's CPU would miss part of it
    busy = subprocess.Popen(
        [sys.executable, "-c", "import sys\nsys.stdin.read(1)\n" + BURN], stdin=subprocess.PIPE
    )
    server = psutil.Process(busy.pid)

    def run() -> float:
        assert busy.stdin is not None
        busy.stdin.write(b"go")
        busy.stdin.close()
        while server.status() != psutil.STATUS_ZOMBIE:  # done burning, not reaped yet
            time.sleep(0.02)
        return 4.0

    try:
        split = cpu_per_image(run)
    finally:
        busy.wait()
    assert split["decode_workers"] < 20.0, split
    assert split["other"] >= 80.0, split


def test_a_forkserver_workers_cpu_counts_once_the_server_reaped_it() -> None:
    # the decode workers are the forkserver's children, not this process's
    context = worker_context()
    warm = context.Process(target=hashlib.pbkdf2_hmac, args=("sha256", b"k", b"s", 1))
    warm.start()  # the server itself starts here, outside the measured run
    warm.join()

    def run() -> float:
        worker = context.Process(target=hashlib.pbkdf2_hmac, args=("sha256", b"k", b"s", 400_000))
        worker.start()
        worker.join()
        assert worker.exitcode == 0
        return 2.0

    before = os.times()
    split = cpu_per_image(run)
    burned = sum(os.times()[:2]) - sum(before[:2])
    assert split["decode_workers"] > 10.0, split
    assert split["this_process"] * 2 / 1000 == pytest.approx(burned, abs=0.05)


def test_the_ceiling_is_the_cores_over_the_jobs_cpu_per_image() -> None:
    cores = len(os.sched_getaffinity(0))
    job = {"this_process": 9.0, "decode_workers": 5.0, "s3_server": 1.0, "total": 15.0}
    job["other"] = 1.5
    job["images_per_s"] = 0.9 * cores * 1000 / 15.0
    alone = {"this_process": 6.0, "decode_workers": 0.0, "s3_server": 0.0, "total": 6.0}
    alone["images_per_s"] = cores * 1000 / 6.0 * 0.95
    bound = cpu_bound(job, alone)
    assert bound["cores"] == cores
    assert bound["ceiling_images_per_s"] == pytest.approx(cores * 1000 / 15.0, abs=0.05)
    assert bound["ceiling_pct_of_runtime_alone"] == pytest.approx(100 * 6.0 / 15.0 / 0.95, abs=0.05)
    assert bound["cores_busy_pct"] == 90.0
    assert bound["machine_busy_pct"] == 99.0  # (15 + 1.5) / 15 of 90%
    table = render_cpu({"cpu_ms_per_image": {"job": job}, "cpu_bound": bound})
    assert "| job | 9.00 | 5.00 | 1.00 | 15.00 | 1.50 |" in table
    assert "the cores 90.0% busy with its work (99.0% with every process's)" in table
