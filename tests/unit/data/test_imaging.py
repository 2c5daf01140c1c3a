"""The one decode-and-resize function and the preprocessing contract."""

from __future__ import annotations

import io
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from PIL import Image

from rxvision.data.imaging import (
    IMAGE_SPEC_VERSION,
    ImageDecodeError,
    ImageSpec,
    PreprocessingMismatch,
    decode_hashed,
    decode_resized,
    difference_hash,
    load_image,
)
from rxvision.data.localize import CropSpec
from rxvision.errors import ConfigError

pytestmark = pytest.mark.unit


def jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def stripes(size: int, period: int = 2) -> np.ndarray:
    """Black and white vertical stripes: the worst case for a resize that aliases."""
    row = ((np.arange(size) // (period // 2)) % 2 * 255).astype(np.uint8)
    return np.repeat(np.repeat(row[None, :, None], size, axis=0), 3, axis=2)


def test_shrinking_is_anti_aliased_unlike_cv2_bilinear() -> None:
    # 1 px stripes shrunk ~7.8x: an anti-aliased resize averages them to mid grey; cv2's
    # bilinear samples a few source pixels and keeps full-contrast moire
    pixels = stripes(500)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, "PNG")
    ours = load_image(png.getvalue(), ImageSpec(img_size=64)).astype(float)
    aliased = A.Resize(64, 64)(image=pixels)["image"].astype(float)
    assert ours.std() < 5 and abs(ours.mean() - 127.5) < 3
    assert aliased.std() > 60


def test_same_bytes_same_pixels_from_a_path_or_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = jpeg(rng.integers(0, 255, size=(300, 280, 3), dtype=np.uint8))
    (tmp_path / "a.jpg").write_bytes(data)
    spec = ImageSpec(img_size=48)
    from_path = load_image(tmp_path / "a.jpg", spec)
    assert from_path.shape == (48, 48, 3) and from_path.dtype == np.uint8
    assert np.array_equal(from_path, load_image(data, spec))
    assert np.array_equal(from_path, decode_resized(data, spec))


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"", "empty_file"), (b"hello world", "not_an_image"), (jpeg(stripes(64))[:200], "corrupt")],
)
def test_bad_files_name_the_file_and_the_reason(data: bytes, code: str) -> None:
    with pytest.raises(ImageDecodeError, match=f"shelf/x.jpg: {code}") as info:
        load_image(data, ImageSpec(img_size=32), name="shelf/x.jpg")
    assert info.value.code == code


def test_limits_refuse_before_decoding() -> None:
    data = jpeg(stripes(200))
    with pytest.raises(ImageDecodeError, match="decompression_bomb"):
        decode_resized(data, ImageSpec(img_size=32), max_pixels=100)
    with pytest.raises(ImageDecodeError, match="file_too_large"):
        decode_resized(data, ImageSpec(img_size=32), max_bytes=10)


def test_the_contract_round_trips_and_refuses_drift() -> None:
    spec = ImageSpec(img_size=96, resample="bicubic")
    assert ImageSpec.from_dict(spec.to_dict(), source="model m") == spec
    assert spec.to_dict()["version"] == IMAGE_SPEC_VERSION
    with pytest.raises(PreprocessingMismatch, match="model m has no preprocessing contract"):
        ImageSpec.from_dict({}, source="model m")
    with pytest.raises(PreprocessingMismatch, match="image spec version 1"):
        ImageSpec.from_dict({**spec.to_dict(), "version": 1}, source="model m")
    with pytest.raises(PreprocessingMismatch, match="feature set k was preprocessed as 64 px"):
        spec.require_same(ImageSpec(img_size=64), what="feature set k")
    with pytest.raises(ConfigError, match="resample 'area'"):
        ImageSpec(img_size=64, resample="area")  # type: ignore[arg-type]
    assert spec.config_hash() != ImageSpec(img_size=96).config_hash()


def test_perceptual_hash_survives_a_reencode_but_not_another_picture() -> None:
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 255, size=(8, 8, 3)), np.ones((32, 32, 1))).astype(np.uint8)
    other = np.kron(rng.integers(0, 255, size=(8, 8, 3)), np.ones((32, 32, 1))).astype(np.uint8)
    spec = ImageSpec(img_size=64)
    a = difference_hash(load_image(jpeg(smooth, 95), spec))
    b = difference_hash(load_image(jpeg(smooth, 40), spec))
    c = difference_hash(load_image(jpeg(other, 95), spec))
    assert bin(a ^ b).count("1") <= 6
    assert bin(a ^ c).count("1") > 12


def bits(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def pill_photo(background: tuple[int, int, int], centre: tuple[int, int], seed: int) -> np.ndarray:
    """A round white pill with a dark mark on a textured surface (cv2 primitives)."""
    import cv2

    rng = np.random.default_rng(seed)
    photo = np.empty((256, 256, 3), np.float32)
    photo[:] = background
    coarse = rng.normal(0, 12, size=(8, 8, 3)).astype(np.float32)
    photo += cv2.resize(coarse, (256, 256), interpolation=cv2.INTER_CUBIC)
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    cv2.circle(photo, centre, 50, (245, 245, 240), -1)
    cv2.putText(photo, "A7", (centre[0] - 22, centre[1] + 12), 0, 1.1, (40, 40, 40), 3)
    return photo


def test_the_perceptual_hash_is_of_the_photo_not_of_the_masked_crop() -> None:
    # two photos of one pill, other surfaces and places: the masked crops are nearly the
    # same picture, the photos are not (no near-duplicate)
    spec = ImageSpec(img_size=64, crop=CropSpec(mask_background=True))
    first = jpeg(pill_photo((40, 90, 160), (90, 100), seed=1))
    second = jpeg(pill_photo((150, 110, 70), (160, 150), seed=2))
    crop_a, located_a, hash_a = decode_hashed(first, spec)
    crop_b, located_b, hash_b = decode_hashed(second, spec)
    assert located_a == located_b == "localized"
    assert bits(difference_hash(crop_a), difference_hash(crop_b)) <= 6  # crops alike
    assert bits(hash_a, hash_b) > 12  # photos unlike
    # a re-encode of a photo stays its near-duplicate
    again = jpeg(pill_photo((40, 90, 160), (90, 100), seed=1), quality=40)
    assert bits(hash_a, decode_hashed(again, spec)[2]) <= 6
    # without a crop the photo's hash is that of the model's pixels, as before
    plain = ImageSpec(img_size=64)
    assert decode_hashed(first, plain)[2] == difference_hash(load_image(first, plain))
