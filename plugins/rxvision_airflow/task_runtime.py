"""What every in-process RxVision task runs inside: the connections' variables, and a
``__main__`` that worker processes can start without.

Airflow runs a task in a process whose ``__main__`` is the ``airflow`` script. Process
pools started with spawn or forkserver (the validator's decode workers) re-import
``__main__`` in each child, and importing Airflow there fails: the task process holds
no database URL by design. Hiding the main module's path for the task's duration lets
the children start from ``rxvision`` alone.

On a Celery worker the task process is forked from a prefork pool process, which
multiprocessing marks daemonic; daemonic processes may not start children ("daemonic
processes are not allowed to have children"), and Celery's billiard leaves its own authkey
type, which multiprocessing refuses to pickle to a forkserver. The task process is its
own process, supervised by Airflow, and the pools it starts are joined before it returns:
for the task's duration it is a plain multiprocessing parent.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rxvision.pipeline.config import PipelineConfig
from rxvision_airflow.connections import connection_env


@contextmanager
def main_module_hidden() -> Iterator[None]:
    """Children of spawn/forkserver pools skip re-importing ``__main__`` in this block."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main and k in main.__dict__}
    for key in saved:
        if key == "__file__":
            del main.__dict__[key]  # type: ignore[union-attr]
        else:
            main.__dict__[key] = None  # type: ignore[union-attr]
    try:
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


@contextmanager
def children_allowed() -> Iterator[None]:
    """Let a task forked from a Celery pool process start process pools in this block."""
    process = multiprocessing.current_process()
    config = process._config  # type: ignore[attr-defined]
    saved = {k: config[k] for k in ("daemon", "authkey") if k in config}
    config["daemon"] = False
    # The same key as multiprocessing's own AuthenticationString: the current process may
    # be billiard's, whose authkey setter would wrap it in billiard's type again.
    key = bytes(config.get("authkey") or os.urandom(32))
    config["authkey"] = multiprocessing.process.AuthenticationString(key)
    try:
        yield
    finally:
        config.update(saved)


def worker_task_slots() -> int:
    """How many tasks this task's worker may run at once: a Celery worker's
    ``worker_concurrency``, else (LocalExecutor) ``[core] parallelism``."""
    from airflow.configuration import conf

    if "celery" in conf.get("core", "executor", fallback="").lower():
        return max(1, conf.getint("celery", "worker_concurrency", fallback=1))
    return max(1, conf.getint("core", "parallelism", fallback=1))


@contextmanager
def rxvision_task(cfg: PipelineConfig, component: str = "worker") -> Iterator[dict[str, str]]:
    """Connections as variables, a pool-safe ``__main__``, and process pools allowed on
    Celery workers, for the block."""
    with main_module_hidden(), children_allowed(), connection_env(cfg, component) as env:
        yield env
