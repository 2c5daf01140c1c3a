"""The streaming walk of a dataset folder: every file below a class folder, in a stable
order, with its label and split; classes found per split; anything else (stray files,
hidden or symlinked folders) listed as ignored, never dropped silently. Only the two
files a snapshot pull writes beside the class folders (its marker and index) are passed
over without a word: they are RxVision's own, in every pulled folder.

Memory holds one folder's names at a time, so the walk scales to millions of files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rxvision.data.decode import IGNORED_FILE
from rxvision.data.snapshot_shards import MARKER_FILE, PULLED_INDEX_FILE
from rxvision.data.validation.report import FileIssue
from rxvision.errors import DataValidationError

# what `SnapshotStore.pull` writes at the top of the folder it fills
PULL_FILES = frozenset({MARKER_FILE, PULLED_INDEX_FILE})


@dataclass(frozen=True, slots=True)
class WalkEntry:
    """One file of the dataset (with ``size`` >= 0: the bytes at ``offset`` of ``path``)."""

    path: str
    key: str  # posix path relative to the dataset root
    label: str
    split: str | None
    offset: int = 0
    size: int = -1  # -1: the whole file


class FileWalk(Protocol):
    """What the scan reads of a dataset: its files, then its classes and ignored files."""

    layout: str
    classes: dict[str | None, list[str]]
    ignored: list[FileIssue]

    @property
    def splits(self) -> tuple[str, ...]: ...

    def files(self) -> Iterator[WalkEntry]: ...


class DatasetWalk:
    """Streams the files of a dataset folder and records its classes and ignored files."""

    def __init__(self, root: Path, split_names: tuple[str, ...]) -> None:
        self.root = root
        self.split_names = split_names
        self.classes: dict[str | None, list[str]] = {}
        self.ignored: list[FileIssue] = []
        top = _sorted_entries(root)
        dirs = [e for e in top if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
        self.layout = "split" if dirs and all(d.name in split_names for d in dirs) else "flat"
        if self.layout == "flat" and any(d.name in split_names for d in dirs):
            names = sorted(d.name for d in dirs if d.name in split_names)
            self.ignored.append(
                FileIssue(
                    None,
                    IGNORED_FILE,
                    f"folders {names} look like splits but sit beside class folders: "
                    "treated as classes",
                )
            )
        self._top = top

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names found, in policy order (empty for a flat layout)."""
        return tuple(s for s in self.split_names if s in self.classes)

    def files(self) -> Iterator[WalkEntry]:
        """Every file below a class folder, in a stable order."""
        if self.layout == "flat":
            yield from self._classes_in(self._top, prefix="", split=None)
            return
        for entry in self._top:
            if self._keep_dir(entry, entry.name):
                yield from self._classes_in(
                    _sorted_entries(Path(entry.path)), entry.name, entry.name
                )

    def _classes_in(
        self, entries: list[os.DirEntry[str]], prefix: str, split: str | None
    ) -> Iterator[WalkEntry]:
        labels = self.classes.setdefault(split, [])
        for entry in entries:
            key = f"{prefix}/{entry.name}" if prefix else entry.name
            if self._keep_dir(entry, key):
                labels.append(entry.name)
                yield from self._files_in(Path(entry.path), key, entry.name, split)

    def _keep_dir(self, entry: os.DirEntry[str], key: str) -> bool:
        """Directories to descend into; anything else at this level is listed as ignored."""
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            return True
        if key in PULL_FILES and entry.is_file(follow_symlinks=False):
            return False
        if entry.is_symlink() and entry.is_dir():
            reason = "a symlinked folder (not followed)"
        elif entry.is_dir(follow_symlinks=False):
            reason = "a hidden folder"
        else:
            reason = "a file outside any class folder"
        self.ignored.append(FileIssue(key, IGNORED_FILE, f"ignored: {reason}"))
        return False

    def _files_in(
        self, folder: Path, key: str, label: str, split: str | None
    ) -> Iterator[WalkEntry]:
        # an explicit stack, not recursion: a hostile tree may nest deeper than Python's limit
        stack = [(folder, key)]
        while stack:
            here, here_key = stack.pop()
            subfolders = []
            for entry in _sorted_entries(here):
                child = f"{here_key}/{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append((Path(entry.path), child))
                elif entry.is_symlink() and entry.is_dir():
                    self.ignored.append(
                        FileIssue(child, IGNORED_FILE, "ignored: a symlinked folder (not followed)")
                    )
                else:
                    yield WalkEntry(entry.path, child, label, split)
            stack.extend(reversed(subfolders))


def _sorted_entries(folder: Path) -> list[os.DirEntry[str]]:
    # one folder's names at a time: sorting needs them, the walk as a whole streams
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        raise DataValidationError(f"cannot list dataset folder {folder}: {exc}") from exc
