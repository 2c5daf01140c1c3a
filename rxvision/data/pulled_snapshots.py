"""A worker's snapshots: one folder per snapshot under a common root, each holding the
marker that ``SnapshotStore.pull`` (unpacked) or ``SnapshotStore.checkout`` (read in
place) writes once it is verified, kept by last use (``rxvision.data.kept_folders``)."""

from __future__ import annotations

from pathlib import Path

from rxvision.data.kept_folders import DELETING, prune_used_last
from rxvision.data.kept_folders import mark_used as _mark_used
from rxvision.data.snapshot_shards import MARKER_FILE

__all__ = ["DELETING", "mark_used", "prune_pulled"]


def mark_used(out: Path) -> None:
    """Record that the snapshot pulled into ``out`` was used now."""
    _mark_used(out, MARKER_FILE)


def prune_pulled(root: Path, keep: int, current: Path) -> list[Path]:
    """Delete the pulled snapshots under ``root`` beyond the ``keep`` used last (``current``
    always kept, whatever its time); folders without a marker are not pulls and are left
    alone. Returns the folders deleted."""
    return prune_used_last(root, keep, current, MARKER_FILE)
