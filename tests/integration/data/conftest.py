from __future__ import annotations

from pathlib import Path

import pytest

from rxvision.data.synth import generate_dataset


@pytest.fixture(scope="session")
def pill_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real synthetic pill dataset (4 products x 12 images, 96 px)."""
    out = tmp_path_factory.mktemp("pills") / "ds"
    generate_dataset(out, classes=4, per_class=12, size=96, seed=7, workers=1)
    return out
