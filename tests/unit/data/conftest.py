"""Fixtures that write real image files, good and malformed, for the data tests."""

from __future__ import annotations

import os

# test modules import albumentations directly: no update check against PyPI (no network)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import shutil
import struct
import zlib
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

GOOD_SIZE = (224, 224)


def rgb_image(seed: int, size: tuple[int, int] = GOOD_SIZE, mode: str = "RGB") -> Image.Image:
    """A smooth random image: distinct bytes per seed, small as a JPEG."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BILINEAR)
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_raw(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand, so headers can say what Pillow would refuse to write."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def rgb16_png(size: int = 224) -> bytes:
    """16 bits per channel RGB: Pillow opens it as 8-bit "RGB", losing the low bits."""
    rng = np.random.default_rng(16)
    pixels = rng.integers(0, 65535, size=(size, size, 3), dtype=np.uint16).astype(">u2")
    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(size))
    return png_raw(size, size, 16, 2, rows)


def bomb_png() -> bytes:
    """A PNG whose header declares 30000 x 30000 pixels; a few dozen bytes on disk."""
    return png_raw(30000, 30000, 8, 2, b"")


def bad_crc_png(chunk: bytes) -> bytes:
    """A valid PNG with one bit of ``chunk``'s CRC flipped."""
    data = bytearray(encode(rgb_image(7), "PNG"))
    start = data.index(chunk) - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    data[start + 8 + length] ^= 0x01
    return bytes(data)


def exif_rotated_jpeg(seed: int) -> bytes:
    image = rgb_image(seed)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    return encode(image, "JPEG", exif=exif)


def malformed_files() -> dict[str, tuple[bytes, str]]:
    """File name -> (bytes, the reason code the validator must reject it with)."""
    good_jpeg = encode(rgb_image(1), "JPEG", quality=90)
    tiff = encode(rgb_image(2), "TIFF", compression="tiff_lzw")
    gif = encode(rgb_image(3), "GIF")
    return {
        "truncated.jpg": (good_jpeg[: len(good_jpeg) * 6 // 10], "corrupt"),
        "zero.jpg": (b"", "empty_file"),
        "notes.jpg": (b"batch 42 photos, see the shared drive\n", "not_an_image"),
        "page.jpg": (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "not_an_image"),
        "gray.jpg": (encode(rgb_image(4, mode="L"), "JPEG"), "not_rgb"),
        "cmyk.jpg": (encode(rgb_image(5, mode="CMYK"), "JPEG"), "not_rgb"),
        "alpha.png": (encode(rgb_image(6, mode="RGBA"), "PNG"), "not_rgb"),
        "palette.png": (encode(rgb_image(8, mode="P"), "PNG"), "not_rgb"),
        "gray16.png": (encode(rgb_image(9, mode="L").convert("I;16"), "PNG"), "not_rgb"),
        "rgb16.png": (rgb16_png(), "not_rgb"),
        "small.jpg": (encode(rgb_image(10, size=(100, 180)), "JPEG"), "too_small"),
        "badcrc-ihdr.png": (bad_crc_png(b"IHDR"), "corrupt"),
        "badcrc-idat.png": (bad_crc_png(b"IDAT"), "corrupt"),
        "bomb.png": (bomb_png(), "decompression_bomb"),
        "broken.tif": (tiff[: len(tiff) // 3], "corrupt"),
        "broken.gif": (gif[: len(gif) // 2], "corrupt"),
        "readme.txt": (b"not part of the dataset\n", "unsupported_format"),
        "icon.png": (encode(rgb_image(11, size=(256, 256)), "ICO"), "unsupported_format"),
    }


ImageBytes = Callable[..., bytes]


@pytest.fixture(scope="session")
def image_bytes() -> ImageBytes:
    """``image_bytes(seed, size=(224, 224), fmt="JPEG", mode="RGB")``: a distinct image."""

    def make(
        seed: int, size: tuple[int, int] = GOOD_SIZE, fmt: str = "JPEG", mode: str = "RGB"
    ) -> bytes:
        return encode(rgb_image(seed, size=size, mode=mode), fmt)

    return make


@pytest.fixture(scope="session")
def malformed() -> dict[str, tuple[bytes, str]]:
    """File name -> (bytes, expected reason code), for every malformed kind."""
    return malformed_files()


@pytest.fixture
def good_dataset(tmp_path: Path) -> Callable[..., Path]:
    """``good_dataset(classes, per_class, root=, size=, seed=)``: folders of distinct good
    JPEGs; returns the root."""

    def make(
        classes: int = 2,
        per_class: int = 4,
        *,
        root: Path | None = None,
        size: tuple[int, int] = GOOD_SIZE,
        seed: int = 0,
    ) -> Path:
        root = root or tmp_path / "dataset"
        write_good_images(root, classes, per_class, size=size, seed=seed)
        return root

    return make


def write_good_images(
    root: Path, classes: int, per_class: int, *, size: tuple[int, int] = GOOD_SIZE, seed: int = 0
) -> None:
    for c in range(classes):
        folder = root / f"class-{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = rgb_image(seed * 100_000 + c * 1000 + i, size=size)
            (folder / f"img-{i:03d}.jpg").write_bytes(encode(image, "JPEG"))


@pytest.fixture(scope="session")
def bad_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Two classes of good images plus every malformed file, a cross-product duplicate,
    a same-product duplicate, an EXIF-rotated image and a file outside any class folder.

    Shared by the session: tests must not change it. Returns the root and the expected
    rejections (posix path -> reason code).
    """
    root = tmp_path_factory.mktemp("bad") / "dataset"
    write_good_images(root, classes=2, per_class=4)
    expected: dict[str, str] = {}
    for name, (data, code) in malformed_files().items():
        (root / "class-0" / name).write_bytes(data)
        expected[f"class-0/{name}"] = code
    # the same bytes under two products: both copies are rejected
    shutil.copyfile(root / "class-0/img-000.jpg", root / "class-1/copied.jpg")
    expected["class-0/img-000.jpg"] = "label_conflict"
    expected["class-1/copied.jpg"] = "label_conflict"
    # warnings only: a second copy in the same product, an EXIF-rotated photo, a stray file
    shutil.copyfile(root / "class-1/img-001.jpg", root / "class-1/again.jpg")
    (root / "class-1/rotated.jpg").write_bytes(exif_rotated_jpeg(12))
    (root / "notes.md").write_text("outside any class folder\n")
    return root, expected


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small clean synthetic dataset (3 products x 6 photos at 224 px), made once."""
    from rxvision.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth") / "clean"
    generate_dataset(out, classes=3, per_class=6, size=224, seed=5, workers=1)
    return out
