"""check_class_layout: a dataset laid out by split is refused, a class layout is not."""

from __future__ import annotations

import os
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from rxvision.data.layout import SPLIT_NAMES, DataLayoutError, check_class_layout
from rxvision.errors import DataValidationError

pytestmark = pytest.mark.unit


def jpeg(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = BytesIO()
    Image.new("RGB", (16, 16), (seed % 256, 80, 160)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue())


def test_a_class_layout_passes(tmp_path: Path) -> None:
    for c, product in enumerate(("ndc-1234-5678", "ndc-9999-0001")):
        jpeg(tmp_path / product / "a.jpg", c)
        jpeg(tmp_path / product / "front" / "b.jpg", c)  # nested under a class: fine
    (tmp_path / "manifest.parquet").write_bytes(b"not an image")
    check_class_layout(tmp_path)


@pytest.mark.parametrize("splits", [("train", "val", "test"), ("Training", "VALID"), ("holdout",)])
def test_a_split_layout_is_refused_naming_root_and_folders(
    tmp_path: Path, splits: tuple[str, ...]
) -> None:
    for s, split in enumerate(splits):
        jpeg(tmp_path / split / "ndc-1234-5678" / "a.jpg", s)
    with pytest.raises(DataLayoutError) as caught:
        check_class_layout(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message
    for split in splits:
        assert f"{split}/" in message
    assert "one folder per class" in message and "Merge the split folders" in message
    assert isinstance(caught.value, DataValidationError)


def test_every_split_name_is_known(tmp_path: Path) -> None:
    expected = {"train", "training", "val", "valid", "validation", "dev", "test", "testing"}
    assert expected | {"holdout"} == SPLIT_NAMES
    for name in sorted(SPLIT_NAMES):
        root = tmp_path / name
        jpeg(root / name.upper() / "class-a" / "x" / "deep.png")  # any depth below a class
        with pytest.raises(DataLayoutError, match=name.upper()):
            check_class_layout(root)


def test_a_split_folder_beside_class_folders_is_refused(tmp_path: Path) -> None:
    jpeg(tmp_path / "ndc-1234-5678" / "a.jpg")
    jpeg(tmp_path / "test" / "ndc-1234-5678" / "b.jpg")
    with pytest.raises(DataLayoutError, match=r"test/"):
        check_class_layout(tmp_path)


def test_split_names_without_class_folders_of_images_pass(tmp_path: Path) -> None:
    jpeg(tmp_path / "train" / "a.jpg")  # images straight under it: a class named train
    (tmp_path / "val" / "notes").mkdir(parents=True)  # sub-folder with no image
    (tmp_path / "val" / "notes" / "readme.txt").write_text("no images here\n")
    (tmp_path / "test").mkdir()  # empty
    jpeg(tmp_path / ".train" / "class-a" / "a.jpg")  # hidden: skipped as the walks do
    jpeg(tmp_path / "ndc-1" / "test" / "a.jpg")  # a split name below a class: fine
    check_class_layout(tmp_path)


def test_symlinked_split_folders_are_not_followed(tmp_path: Path) -> None:
    jpeg(tmp_path / "elsewhere" / "class-a" / "a.jpg")
    root = tmp_path / "root"
    jpeg(root / "ndc-1" / "a.jpg")
    os.symlink(tmp_path / "elsewhere", root / "train")
    check_class_layout(root)


def test_a_missing_root_is_left_to_the_caller(tmp_path: Path) -> None:
    check_class_layout(tmp_path / "absent")
