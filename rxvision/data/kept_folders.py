"""Local folders kept by last use: one folder per downloaded thing (a pulled snapshot, a
feature set) under a common root, each holding a marker file written once the folder is
complete. Every night of a growing catalogue brings a new one (about the catalogue's size
on disk), so only the few used last are kept.

"Used" is the marker's modification time: completing a folder sets it, and using a
folder that is already there touches it. A folder is deleted by first renaming it out of
the way (one atomic step: nobody ever sees a half-deleted folder with its marker), then
removing the renamed tree. Folders without a marker (incomplete, or not ours) are left.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

DELETING = ".deleting-"


def mark_used(folder: Path, marker: str) -> None:
    """Record that ``folder`` (complete) was used now: its ``marker`` file is touched."""
    path = folder / marker
    path.touch()
    # the precise clock, not the kernel's coarse one that ``touch`` gets: two folders used
    # within one tick would otherwise tie, and the one to delete would be a coin toss
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def prune_used_last(root: Path, keep: int, current: Path, marker: str) -> list[Path]:
    """Delete the marked folders under ``root`` beyond the ``keep`` used last (``current``
    always kept, whatever its time). Returns the folders deleted."""
    if not root.is_dir():
        return []
    kept = [p for p in root.iterdir() if p.is_dir() and (p / marker).is_file()]
    others = sorted(
        (p for p in kept if p.resolve() != current.resolve()),
        key=lambda p: (p / marker).stat().st_mtime_ns,
        reverse=True,
    )
    stale = others[max(0, keep - 1) :]
    for path in stale:
        doomed = path.with_name(f".{path.name}{DELETING}{os.getpid()}")
        try:
            path.rename(doomed)
        except OSError as exc:  # another process deleted or renamed it first
            log.info("not deleting %s: %s", path, exc)
            continue
        shutil.rmtree(doomed, ignore_errors=True)
        log.info("deleted %s from %s (keeping the %d used last)", path.name, root, keep)
    # trees whose deletion was cut short (a killed process): nothing reads them
    for leftover in root.glob(f".*{DELETING}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return stale
