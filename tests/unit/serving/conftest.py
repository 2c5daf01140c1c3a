"""Fixtures of the serving unit tests (no MLflow, no S3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from serving_fixtures import CLASSES, loaded_model, write_images

from rxvision.serving.image_folder import load_image_folder
from rxvision.serving.scoring_config import ScoringConfig


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """10 good JPEGs in two sub-folders, a truncated JPEG, an empty file, a text file
    with an image suffix, plus files scoring must ignore (other suffix, hidden)."""
    root = tmp_path / "input"
    write_images(root / "a", 6)
    write_images(root / "b", 4)
    good = (root / "a" / "img-000.jpg").read_bytes()
    (root / "b" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "b" / "empty.jpg").write_bytes(b"")
    (root / "b" / "notes.png").write_text("not an image at all")
    (root / "b" / "readme.txt").write_text("ignored: not an image suffix")
    (root / ".hidden.jpg").write_bytes(good)
    return root


@pytest.fixture
def config() -> ScoringConfig:
    """Small batches, eager runtime (exports are tested on their own)."""
    return ScoringConfig(
        shard_size=5,
        batch_size=4,
        download_workers=2,
        max_in_flight=8,
        runtimes=["eager"],
        device="cpu",
        review_threshold=0.5,
        top_k=2,
        circuit={"window": 8, "error_rate": 0.5, "min_calls": 4},
        statsd={"host": None},
    )


@pytest.fixture
def images(tmp_path: Path) -> torch.Tensor:
    """Real (decoded, preprocessed) images, not noise."""
    for name in CLASSES:
        write_images(tmp_path / "val" / name, 4)
    batch, _ = load_image_folder(tmp_path / "val", loaded_model())
    return batch
