"""What every in-process RxVision task runs inside: the connections' variables, and a
``__main__`` that worker processes can start without.

Airflow runs a task in a process whose ``__main__`` is the ``airflow`` script. Process
pools started with spawn or forkserver (the validator's decode workers) re-import
``__main__`` in each child, and importing Airflow there fails: the task process holds
no database URL by design. Hiding the main module's path for the task's duration lets
the children start from ``rxvision`` alone.
"""

from __future__ import annotations

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
def rxvision_task(cfg: PipelineConfig) -> Iterator[dict[str, str]]:
    """Connections as variables plus a pool-safe ``__main__``, for the block."""
    with main_module_hidden(), connection_env(cfg) as env:
        yield env
