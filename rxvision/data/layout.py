"""The dataset layout RxVision accepts: ``DIR/<class>/.../<image>``, one folder per class.

RxVision makes its own train/validation/test splits (by content hash), so a dataset that
comes already split, ``DIR/<split>/<class>/<image>``, is refused: read as a class folder
layout, its split names would become classes. ``check_class_layout`` finds that layout
without reading any image: it stops at the first image under a split-named folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from rxvision.errors import DataValidationError

__all__ = ["IMAGE_SUFFIXES", "SPLIT_NAMES", "DataLayoutError", "check_class_layout"]


class DataLayoutError(DataValidationError):
    """A dataset folder is not laid out as one folder per class (e.g. it is split)."""


# compared in lower case
SPLIT_NAMES = frozenset(
    {"train", "training", "val", "valid", "validation", "dev", "test", "testing", "holdout"}
)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def check_class_layout(root: Path) -> None:
    """Raise ``DataLayoutError`` when ``root`` is laid out by split, not by class.

    A top-level folder whose name is a split name (any case: train, training, val, valid,
    validation, dev, test, testing, holdout) is refused when one of its sub-folders holds
    an image at any depth: that is ``DIR/<split>/<class>/<image>``. A class folder that
    merely holds images directly, or a root that is not a folder, is left to the caller.
    Hidden entries and symlinked folders are skipped, as the dataset walks do.
    """
    root = Path(root)
    offending = [
        name
        for name, path in _visible_dirs(root)
        if name.lower() in SPLIT_NAMES and _split_like(path)
    ]
    if not offending:
        return
    folders = ", ".join(f"{name}/" for name in offending)
    raise DataLayoutError(
        f"{root}: top-level folder(s) {folders} are split names holding class folders "
        "(DIR/<split>/<class>/<image>); RxVision expects one folder per class "
        "(DIR/<class>/<image>) and assigns train/validation/test itself by content hash. "
        "Merge the split folders: move each <split>/<class>/ into <class>/ under the root, "
        "then remove the split folders."
    )


def _visible_dirs(folder: Path) -> list[tuple[str, Path]]:
    """Sorted (name, path) of the non-hidden, non-symlinked sub-folders; [] if unreadable."""
    try:
        with os.scandir(folder) as entries:
            return sorted(
                (e.name, Path(e.path))
                for e in entries
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            )
    except OSError:
        return []


def _split_like(split: Path) -> bool:
    """Whether a sub-folder of ``split`` holds an image at any depth."""
    return any(_holds_image(path) for _, path in _visible_dirs(split))


def _holds_image(folder: Path) -> bool:
    # an explicit stack, not recursion: a hostile tree may nest deeper than Python's limit
    stack = [folder]
    while stack:
        here = stack.pop()
        try:
            with os.scandir(here) as entries:
                listed = list(entries)
        except OSError:
            continue
        for entry in listed:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                return True
    return False
