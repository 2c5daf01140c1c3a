"""Where training images come from: what ``resolve_data`` accepts and refuses."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rxvision.errors import ConfigError, NotFound
from rxvision.home import repo_root
from rxvision.train.config import load_train_config
from rxvision.train.data_source import resolve_data, split_source

CPU_QUICK = repo_root() / "configs" / "cpu-quick.yaml"

pytestmark = pytest.mark.unit


def test_bad_data_is_named(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nowhere"):
        resolve_data(tmp_path / "nowhere")
    (tmp_path / "one" / "only-class").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "only-class" / "a.jpg")
    with pytest.raises(ConfigError, match="at least 2"):
        resolve_data(tmp_path / "one")


def noise_folder(root: Path, per_class: int) -> Path:
    """Two classes of distinct noise photos (no two near-duplicates)."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def split_of_noise(
    root: Path, per_class: int, fractions: tuple[float, float], caplog: pytest.LogCaptureFixture
) -> tuple[dict[str, int], list[str]]:
    """The split counts of a noise folder under these validation and test fractions, and
    the warnings said while splitting it."""
    source = resolve_data(noise_folder(root, per_class))
    overrides = [f"data.val_fraction={fractions[0]}", f"data.test_fraction={fractions[1]}"]
    config = load_train_config(CPU_QUICK, overrides)
    with caplog.at_level(logging.WARNING, logger="rxvision.train.data_source"):
        counts = split_source(source, config.data).counts()
    return counts, [r.getMessage() for r in caplog.records]


def test_too_few_images_for_the_held_out_splits_are_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counts, said = split_of_noise(tmp_path / "few", 2, (0.001, 0.001), caplog)
    assert counts == {"train": 4, "val": 0, "test": 0}
    assert any("no validation images (4 images" in m and "temperature" in m for m in said)
    assert any("no test images (4 images" in m and "gates refuse it" in m for m in said)


def test_held_out_splits_with_images_say_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counts, said = split_of_noise(tmp_path / "enough", 20, (0.4, 0.4), caplog)
    assert all(counts[s] > 0 for s in ("train", "val", "test"))
    assert said == []
