"""What the training monitor measures: peak memory, free disk and images per second.

``rxvision.train.monitoring`` compares these with the thresholds of ``monitoring:`` in the
training config; here they are only measured.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import time
from pathlib import Path

from rxvision.train.checkpoints import CheckpointStore


def gib(n_bytes: float) -> str:
    """``n_bytes`` as GiB with 2 decimals (and the exact bytes below 1 MiB)."""
    if n_bytes < 2**20:
        return f"{int(n_bytes)} B"
    return f"{n_bytes / 2**30:.2f} GiB"


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def free_disk_bytes(path: Path) -> tuple[Path, int]:
    """(the nearest existing folder of ``path``, the bytes free on its file system)."""
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder, shutil.disk_usage(folder).free


def checkpoint_disk(store: CheckpointStore) -> Path:
    """Where checkpoints take local disk: the run's folder, or the staging folder for S3."""
    return store.staging_root if store.is_s3 else store.local_dir


class ThroughputWatch:
    """Images per second per batch; the recent median against the running median.

    The clock restarts after validation and at epoch ends, so an evaluation pause is
    never counted as a slow batch.
    """

    def __init__(self, warmup_steps: int, window: int) -> None:
        self.warmup_steps = warmup_steps
        self.window = window
        self.rates: list[float] = []
        self._last: float | None = None

    def start(self) -> None:
        """A batch begins: start the clock when it is not running."""
        if self._last is None:
            self._last = time.perf_counter()

    def pause(self) -> None:
        """Stop the clock (validation or an epoch end comes)."""
        self._last = None

    def batch_done(self, images: int) -> None:
        """Count one batch of ``images`` images."""
        now = time.perf_counter()
        if self._last is not None:
            self.rates.append(images / max(now - self._last, 1e-9))
        self._last = now

    def medians(self) -> tuple[float, float] | None:
        """(recent, running) medians, None until warm-up and one window are past."""
        steady = self.rates[self.warmup_steps :]
        if len(steady) < self.window:
            return None
        return statistics.median(steady[-self.window :]), statistics.median(steady)
