"""The training monitor's measurements: free disk, memory, images per second."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rxvision.train.resource_probes import ThroughputWatch, free_disk_bytes, gib, peak_rss_bytes

pytestmark = pytest.mark.unit


def test_free_disk_of_a_folder_not_made_yet_is_its_nearest_existing_parent(
    tmp_path: Path,
) -> None:
    folder, free = free_disk_bytes(tmp_path / "run" / "checkpoints" / "step")
    assert folder == tmp_path
    assert free == shutil.disk_usage(tmp_path).free


def test_gib_keeps_bytes_below_a_mebibyte_and_two_decimals_above() -> None:
    assert gib(512) == "512 B"
    assert gib(3 * 2**30 + 2**29) == "3.50 GiB"


def test_peak_rss_grows_when_this_process_touches_more_memory() -> None:
    before = peak_rss_bytes()
    block = np.ones(before // 8 + 64 * 2**20 // 8)  # more than the peak so far, touched
    assert peak_rss_bytes() >= before + 60 * 2**20
    del block


def test_throughput_has_no_medians_until_warmup_and_one_window_are_past() -> None:
    watch = ThroughputWatch(warmup_steps=2, window=3)
    watch.rates = [1.0, 1.0, 10.0, 10.0]
    assert watch.medians() is None
    watch.rates.append(4.0)
    assert watch.medians() == (10.0, 10.0)
    watch.rates = [1.0, 1.0, 10.0, 10.0, 10.0, 10.0, 4.0, 4.0, 4.0]  # warm-up left out
    assert watch.medians() == (4.0, 10.0)  # the recent window has slowed, the run has not


def test_a_paused_clock_counts_no_rate_for_the_pause() -> None:
    watch = ThroughputWatch(warmup_steps=0, window=1)
    watch.start()
    watch.batch_done(32)
    watch.pause()
    watch.batch_done(32)  # the first batch after a pause only restarts the clock
    assert len(watch.rates) == 1
    watch.start()
    watch.batch_done(32)
    assert len(watch.rates) == 2
