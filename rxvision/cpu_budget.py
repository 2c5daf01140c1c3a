"""How many CPU threads a process may use, and its share when it runs beside others.

Each scoring task of an Airflow worker is its own process, and ONNX Runtime, PyTorch and
the like size their pools for the whole machine by default: four tasks on two cores then
run sixteen compute threads, which wait on each other's barriers. A task's share is the
cores this process may run on divided by the task slots of its worker.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_per_slot(slots: int, cores: int | None = None) -> int:
    """Compute threads for one of ``slots`` processes sharing ``cores`` (default: the
    usable cores), at least 1."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    return max(1, (cores or usable_cores()) // slots)


def limit_compute_threads(threads: int) -> None:
    """Cap PyTorch's intra-op pool at ``threads``; the ONNX Runtime sessions this process
    creates afterwards take the same size (``OnnxPredictor``)."""
    import torch

    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if torch.get_num_threads() != threads:
        log.info("compute threads: %d (of %d usable cores)", threads, usable_cores())
        torch.set_num_threads(threads)
