"""bench/scoring_cache.py stays runnable: a small local run (no stack) with the review
gallery on, whose cached runs serve every row and every gallery crop from the caches.
It rotted once unseen when the plan began mapping shard ids; this catches that."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
IMAGES = 40


def test_the_cache_bench_reports_three_cases_and_reuses_every_gallery_crop(
    tmp_path: Path,
) -> None:
    out = tmp_path / "scoring_cache.json"
    args = [sys.executable, "bench/scoring_cache.py", "--local", "--gallery"]
    args += ["--images", str(IMAGES), "--size", "96", "--repeats", "1", "--out", str(out)]
    proc = subprocess.run(
        args, cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["params"]["images"] == IMAGES
    cases = [row["name"] for row in report["results"]]
    assert cases == [
        "cold (--no-cache)",
        "cached (unchanged images)",
        "incremental DAG run (nothing new)",
    ]
    assert all(row["median"] > 0 for row in report["results"])
    # the bench model's zero head sends every row to review: the cold runs (warm-up and
    # measured) make every crop, the cached runs read every one back
    thumbs = report["gallery_thumbnails"]
    assert thumbs["cold"] == [{"reused": 0, "stored": IMAGES}] * 2
    assert thumbs["cached"] == [{"reused": IMAGES, "stored": 0}] * 2
    assert "cached vs cold:" in proc.stdout
