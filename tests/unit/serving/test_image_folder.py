"""Labelled image folders: samples that span every class."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_fixtures import CLASSES, IMG, loaded_model, write_images

from rxvision.serving.image_folder import image_folder_files, load_image_folder

pytestmark = pytest.mark.unit


def test_calibration_samples_span_every_class(tmp_path: Path) -> None:
    # sorted by class, the first 6 files would all be of the first class
    for name in CLASSES:
        write_images(tmp_path / "train" / name, 10)
    files = image_folder_files(tmp_path / "train", CLASSES, limit=6)
    assert [label for _, label in files] == [0, 1, 2, 0, 1, 2]
    assert len({path for path, _ in files}) == 6
    batch, labels = load_image_folder(tmp_path / "train", loaded_model(), limit=5)
    assert batch.shape == (5, 3, IMG, IMG) and sorted(set(labels.tolist())) == [0, 1, 2]
