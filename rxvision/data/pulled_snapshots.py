"""A worker's pulled snapshots: one folder per snapshot under a common root, each holding
``SnapshotStore.pull``'s marker. Every nightly of a growing catalogue pulls a new one (about
the catalogue's size on disk), so only the few used last are kept.

"Used" is the marker's modification time: a pull sets it, and a pull that finds the
snapshot already there touches it. A folder is deleted by first renaming it out of the
way (one atomic step: nobody ever sees a half-deleted snapshot with its marker), then
removing the renamed tree.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from rxvision.data.snapshot_shards import MARKER_FILE

log = logging.getLogger(__name__)

DELETING = ".deleting-"


def mark_used(out: Path) -> None:
    """Record that the snapshot pulled into ``out`` was used now."""
    os.utime(out / MARKER_FILE)


def prune_pulled(root: Path, keep: int, current: Path) -> list[Path]:
    """Delete the pulled snapshots under ``root`` beyond the ``keep`` used last (``current``
    always kept, whatever its time); folders without a marker are not pulls and are left
    alone. Returns the folders deleted."""
    pulled = [p for p in root.iterdir() if p.is_dir() and (p / MARKER_FILE).is_file()]
    others = sorted(
        (p for p in pulled if p.resolve() != current.resolve()),
        key=lambda p: (p / MARKER_FILE).stat().st_mtime,
        reverse=True,
    )
    stale = others[max(0, keep - 1) :]
    for path in stale:
        doomed = path.with_name(f".{path.name}{DELETING}{os.getpid()}")
        try:
            path.rename(doomed)
        except OSError as exc:  # another worker process deleted or renamed it first
            log.info("not deleting %s: %s", path, exc)
            continue
        shutil.rmtree(doomed, ignore_errors=True)
        log.info("deleted pulled snapshot %s (keeping the %d used last)", path.name, keep)
    # trees whose deletion was cut short (a killed process): nothing reads them
    for leftover in root.glob(f".*{DELETING}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return stale
