"""Where training images come from: what ``resolve_data`` accepts and refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from rxvision.errors import ConfigError, NotFound
from rxvision.train.data_source import resolve_data

pytestmark = pytest.mark.unit


def test_bad_data_is_named(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nowhere"):
        resolve_data(tmp_path / "nowhere")
    (tmp_path / "one" / "only-class").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "only-class" / "a.jpg")
    with pytest.raises(ConfigError, match="at least 2"):
        resolve_data(tmp_path / "one")
