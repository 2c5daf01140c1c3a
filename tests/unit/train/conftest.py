"""Small, fast pieces for the training unit tests: a tiny injected backbone, tiny images."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn


class TinyBackbone(nn.Module):
    """Two conv blocks and global pooling: 8 features, milliseconds per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.block(self.stem(x)))


@pytest.fixture
def tiny_backbone() -> TinyBackbone:
    torch.manual_seed(0)
    return TinyBackbone()


def write_images(root: Path, classes: int, per_class: int, size: int = 24) -> Path:
    """Solid-colour JPEGs, one colour per class: trivially separable."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class-{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.full((size, size, 3), 40 + 60 * c, dtype=np.uint8)
            pixels += rng.integers(0, 10, size=pixels.shape, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"img-{i:03d}.jpg")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """3 classes x 6 JPEGs of 24 px."""
    return write_images(tmp_path / "images", classes=3, per_class=6)
