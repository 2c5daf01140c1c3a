"""A worker's pulled snapshots: the ones used last are kept, older ones deleted whole,
on real folders with real markers and modification times."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rxvision.data.pulled_snapshots import DELETING, mark_used, prune_pulled
from rxvision.data.snapshot_shards import MARKER_FILE

pytestmark = pytest.mark.unit


def pulled(root: Path, name: str, used: float) -> Path:
    folder = root / name
    (folder / "amlo").mkdir(parents=True)
    (folder / "amlo" / "img-0.jpg").write_bytes(b"\xff\xd8 not decoded here")
    (folder / MARKER_FILE).write_text("{}")
    os.utime(folder / MARKER_FILE, (used, used))
    return folder


def test_the_snapshots_used_last_are_kept_and_older_ones_deleted(tmp_path: Path) -> None:
    old, older, newest = (pulled(tmp_path, n, t) for n, t in [("a", 200), ("b", 100), ("c", 300)])
    current = pulled(tmp_path, "d", 50)  # just pulled, whatever its clock says
    (tmp_path / "notes").mkdir()  # no marker: not a pull, never touched
    deleted = prune_pulled(tmp_path, keep=2, current=current)
    assert deleted == [old, older]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "d", "notes"]
    assert newest.is_dir() and current.is_dir()


def test_a_use_moves_a_snapshot_to_the_front(tmp_path: Path) -> None:
    first, second = pulled(tmp_path, "first", 100), pulled(tmp_path, "second", 200)
    current = pulled(tmp_path, "current", 300)
    mark_used(first)
    prune_pulled(tmp_path, keep=2, current=current)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "first"]
    assert not second.exists()


def test_two_uses_in_a_row_are_told_apart(tmp_path: Path) -> None:
    # two markers touched microseconds apart: the kernel's coarse clock (what a plain
    # touch gets) gives both the same time, and the folder pruned would be a coin toss
    current = pulled(tmp_path, "current", 300)
    for later in ("a", "b"):
        earlier = "b" if later == "a" else "a"
        folders = {name: pulled(tmp_path, name, 100) for name in ("a", "b")}
        mark_used(folders[earlier])
        mark_used(folders[later])
        deleted = prune_pulled(tmp_path, keep=2, current=current)
        assert deleted == [folders[earlier]], later
        shutil.rmtree(folders[later])


def test_keep_one_keeps_only_the_current_one_and_leftovers_of_a_cut_deletion_go(
    tmp_path: Path,
) -> None:
    pulled(tmp_path, "a", 100)
    current = pulled(tmp_path, "b", 50)
    cut_short = tmp_path / f".old{DELETING}99999"
    (cut_short / "amlo").mkdir(parents=True)
    prune_pulled(tmp_path, keep=1, current=current)
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
