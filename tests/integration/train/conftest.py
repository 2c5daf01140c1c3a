"""Fixtures of the training integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from rxvision.data.synth import generate_dataset


@pytest.fixture(scope="session")
def tiny_pills(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 products x 8 photos at 48 px: 18 training and 6 validation images."""
    out = tmp_path_factory.mktemp("train-pills") / "ds"
    generate_dataset(out, classes=3, per_class=8, size=48, seed=11, workers=1)
    return out
