"""Imported by a worker pool's forkserver only (``rxvision.forkserver``): runs the
caller's main script there once, as ``__mp_main__``, so that each worker forked from the
server finds it loaded instead of re-running it and all its imports."""

from __future__ import annotations

import json
import logging
import os
import sys
from multiprocessing import process, spawn

from rxvision.forkserver import MAIN_ENV


def _load_main() -> None:
    told = os.environ.get(MAIN_ENV)
    # only in a forkserver (started with -c: its own __main__ has no file)
    if not told or getattr(sys.modules.get("__main__"), "__file__", None) is not None:
        return
    main = json.loads(told)
    path = main["path"]
    sys.argv = list(main["argv"])  # what each worker would have run it with
    sys.path[:] = main.get("sys_path", sys.path)  # as spawn.prepare sets it in a worker
    # as CPython's own preload does: a script without a __main__ guard that starts a
    # process while being imported gets multiprocessing's bootstrapping error, no loop
    current = process.current_process()
    current._inheriting = True  # type: ignore[attr-defined]
    try:
        spawn.import_main_path(path)
    except Exception:  # the workers then re-run it themselves, as without this module
        logging.getLogger(__name__).warning("forkserver: could not preload %s", path)
    finally:
        del current._inheriting  # type: ignore[attr-defined]


_load_main()
