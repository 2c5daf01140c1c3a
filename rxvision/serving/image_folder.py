"""Labelled image folders (``DIR/<class>/*``): the held-out images exports are checked
and models evaluated on, decoded as scoring decodes them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rxvision.errors import NotFound
from rxvision.serving.model_contract import LoadedModel

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def image_folder_files(
    folder: Path, classes: Sequence[str], limit: int | None = None
) -> list[tuple[Path, int]]:
    """(file, class index) of ``folder/<class>/*`` for the model's ``classes``; folders of
    unknown classes are skipped. ``limit`` takes images round-robin across classes, so a
    sample of any size spans every class it can."""
    index = {name: i for i, name in enumerate(classes)}
    by_class: dict[int, list[Path]] = {}
    for path in sorted(folder.glob("*/*")):
        if path.parent.name in index and path.suffix.lower() in IMAGE_SUFFIXES:
            by_class.setdefault(index[path.parent.name], []).append(path)
    files = [(p, c) for c in sorted(by_class) for p in by_class[c]]
    if limit is not None and len(files) > limit:
        queues = [list(by_class[c]) for c in sorted(by_class)]
        labels = sorted(by_class)
        files = []
        while len(files) < limit:
            for label, queue in zip(labels, queues, strict=True):
                if queue and len(files) < limit:
                    files.append((queue.pop(0), label))
    if not files:
        raise NotFound(f"no images of the model's classes under {folder}/<class>/")
    return files


def load_image_folder(
    folder: Path, loaded: LoadedModel, limit: int | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """Model inputs of ``folder/<class>/*`` (decoded as scoring decodes them) and their
    class indexes in the model's class order (see ``image_folder_files``)."""
    files = image_folder_files(folder, loaded.classes, limit)
    tensors = [loaded.load(path) for path, _ in files]
    labels = np.asarray([label for _, label in files], dtype=np.int64)
    return torch.stack(tensors), labels
