"""Tiny models and images for the serving unit tests (imported by name: tests are not a
package, and ``conftest`` is a name every test folder has)."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch import nn

from rxvision.data.imaging import ImageSpec
from rxvision.data.localize import CropSpec
from rxvision.data.synth import generate_dataset
from rxvision.serving.model_contract import LoadedModel, ModelRef, serving_model
from rxvision.storage.uri_store import Storage

CLASSES = ["ndc-a", "ndc-b", "ndc-c"]
IMG = 32


class TinyBackbone(nn.Module):
    """Conv, BatchNorm, pooling: 8 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


def tiny_net(seed: int = 0, classes: int = len(CLASSES)) -> nn.Sequential:
    """The logged format: nn.Sequential(OrderedDict(backbone=..., head=...))."""
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Dropout(0.0), nn.Linear(8, classes))
    return nn.Sequential(OrderedDict(backbone=TinyBackbone(), head=head)).eval()


def loaded_model(label: str = "tiny/1", seed: int = 0, img_size: int = IMG) -> LoadedModel:
    """A LoadedModel as ``load_model`` returns it, without MLflow."""
    ref = ModelRef(uri=f"models:/{label}", pinned_uri=f"models:/{label}", label=label)
    return LoadedModel(serving_model(tiny_net(seed)), CLASSES, ImageSpec(img_size=img_size), ref)


class NanHead(nn.Module):
    """A broken model: NaN logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], len(CLASSES)), float("nan"))


def broken_model(label: str = "tiny/2") -> LoadedModel:
    """A model whose logits are all NaN."""
    loaded = loaded_model(label)
    loaded.model.head = NanHead()
    return loaded


def write_images(folder: Path, count: int, size: int = 40) -> list[Path]:
    """``count`` small RGB JPEGs (distinct colours)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
        path = folder / f"img-{i:03d}.jpg"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def loader_of(models: dict[str, LoadedModel]):  # type: ignore[no-untyped-def]
    """A model loader serving ``models`` by URI; any other URI fails as an unreachable
    registry does."""

    def load(uri: str) -> LoadedModel:
        if uri not in models:
            raise ConnectionError(f"registry unreachable for {uri}")
        return models[uri]

    return load


def read_rows(output: Path) -> list[dict]:  # type: ignore[type-arg]
    """Every committed row of a local run's output, in shard order."""
    rows: list[dict] = []  # type: ignore[type-arg]
    for path in sorted((output / "shards").glob("*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


# the review gallery's tests: a model whose contract crops pills as production's does
PILL_SPEC = ImageSpec(img_size=48, crop=CropSpec(mask_background=True))


def pill_model() -> LoadedModel:
    """The tiny serving model, cropping pills as a production contract does."""
    model = loaded_model(img_size=PILL_SPEC.img_size)
    model.spec = PILL_SPEC
    return model


def pill_photos(root: Path) -> Path:
    """Six synthetic pill photos (2 classes) to score, in ``root/incoming``."""
    generate_dataset(root / "pills", classes=2, per_class=3, size=96, seed=7, workers=1)
    images = root / "incoming"
    shutil.copytree(root / "pills", images, ignore=shutil.ignore_patterns("*.parquet"))
    return images


class CountingStorage(Storage):
    """Local storage that counts the image reads (``.jpg``)."""

    def __init__(self) -> None:
        super().__init__()
        self.image_reads = 0

    def read(self, uri: str) -> bytes:
        self.image_reads += uri.endswith(".jpg")
        return super().read(uri)
