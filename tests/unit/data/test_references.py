"""Reference and review thumbnails: JPEG bytes of a crop, shrunk to fit, colours kept."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from rxvision.data.references import reference_file, thumbnail_jpeg


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _pill(height: int, width: int) -> np.ndarray:
    """A red pill with a dark imprint bar on a grey tray."""
    pixels = np.full((height, width, 3), 150, dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - height / 2) / (height / 3)) ** 2 + ((xx - width / 2) / (width / 3)) ** 2 < 1
    pixels[inside] = (210, 40, 30)
    pixels[height // 2 - 2 : height // 2 + 2, width // 3 : 2 * width // 3] = (20, 20, 20)
    return pixels


def test_a_crop_within_the_limit_keeps_its_size_and_colours() -> None:
    crop = _pill(112, 112)
    decoded = _decoded(thumbnail_jpeg(crop, 160, 80))
    assert decoded.shape == (112, 112, 3)  # never enlarged
    centre = decoded[40:48, 30:40].mean(axis=(0, 1))
    assert centre[0] > 180 and centre[1] < 80 and centre[2] < 70  # red stays red (not BGR)
    assert np.abs(decoded - crop).mean() < 4


def test_a_larger_photo_is_shrunk_to_fit_with_its_aspect() -> None:
    decoded = _decoded(thumbnail_jpeg(_pill(200, 300), 128, 85))
    assert decoded.shape == (85, 128, 3)


def test_a_grey_array_becomes_a_grey_rgb_jpeg() -> None:
    decoded = _decoded(thumbnail_jpeg(_pill(64, 64)[..., 0], 160, 80))
    assert decoded.shape == (64, 64, 3)
    assert np.abs(decoded[..., 0] - decoded[..., 2]).max() <= 2


def test_an_rgba_array_drops_its_alpha() -> None:
    crop = _pill(64, 64)
    alpha = np.linspace(0, 255, 64 * 64).astype(np.uint8).reshape(64, 64, 1)
    assert thumbnail_jpeg(np.dstack([crop, alpha]), 160, 80) == thumbnail_jpeg(crop, 160, 80)


def test_the_huffman_tables_are_optimized() -> None:
    crop = _pill(112, 112)
    plain = io.BytesIO()
    Image.fromarray(crop).save(plain, "JPEG", quality=80)
    assert len(thumbnail_jpeg(crop, 160, 80)) < len(plain.getvalue())


def test_a_non_contiguous_view_is_encoded_as_its_pixels() -> None:
    crop = _pill(80, 96)
    mirrored = crop[:, ::-1]
    assert thumbnail_jpeg(mirrored, 160, 80) == thumbnail_jpeg(mirrored.copy(), 160, 80)


def test_reference_file_names_are_store_safe_and_distinct() -> None:
    assert reference_file("RX 10/mg").startswith("RX_10_mg-")
    assert reference_file("RX 10/mg") != reference_file("RX 10 mg")
