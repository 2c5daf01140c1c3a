"""The forkserver context of the project's worker pools, with the caller's main module
preloaded as CPython means to.

Pools of untrusted-file decoders (``rxvision.data.decode_pool``) and of the synthetic
generator start workers from a forkserver: a worker never inherits the caller's threads
(an OpenCV pool, a progress bar, boto3) or locks. Each forkserver worker first re-runs
the caller's ``__main__`` (so that pickled references to it resolve), unless the server
has it loaded already. ``set_forkserver_preload(["__main__", ...])`` should do that, but
CPython 3.11's server is handed a ``main_path`` key that ``get_preparation_data`` never
makes, so it never preloads ``__main__``: every worker re-imported the caller's script
and everything it imports (~0.25 s per worker for a validation script, all of Airflow in
a task). Here the server imports the main module itself (``rxvision.forkserver_main``,
told its path and ``sys.argv`` through ``MAIN_ENV``), and workers forked from it find it
loaded.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from collections.abc import Sequence
from typing import Any

MAIN_ENV = "RXVISION_FORKSERVER_MAIN"
MAIN_LOADER = "rxvision.forkserver_main"
# one OpenCV thread per worker: a pool has one worker per core already
WORKER_SETUP = "rxvision.pool_worker"


def worker_context(preload: Sequence[str] = ()) -> Any:
    """The forkserver context (spawn where there is none) with ``preload`` and the
    caller's main module loaded once in the server, not in each worker, and one OpenCV
    thread per worker (``rxvision.pool_worker``). The preload takes effect when the
    server starts: the first pool of the process starts it."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([WORKER_SETUP, *main_preload(), *preload])
    return context


def main_preload() -> list[str]:
    """What loads the caller's main module in the server: a module run with ``-m`` is
    imported by its name; a script by path, through ``MAIN_LOADER`` (the server inherits
    this process's environment when it starts)."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name:
        # ``python -m pkg`` runs pkg.__main__: workers skip it, nothing to preload
        return [] if name.endswith("__main__") else [name]
    path = getattr(main, "__file__", None)
    if not path:
        return []  # an interactive session: workers have no main module to re-run
    # argv too: a worker runs main with the caller's argv, so the server must; and the
    # caller's sys.path (CPython 3.11's server ignores the one it is handed): a script
    # importing a module beside it (bench/ imports harness) needs its own folder there
    os.environ[MAIN_ENV] = json.dumps(
        {"path": os.path.abspath(path), "argv": sys.argv, "sys_path": sys.path}
    )
    return [MAIN_LOADER]
