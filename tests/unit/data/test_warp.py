"""RGB warps made on four channels: the same pixels as OpenCV's and albumentations' own."""

from __future__ import annotations

import subprocess
import sys

import albumentations as A
import cv2
import numpy as np
import pytest

from rxvision.data.presets import FourChannelAffine, shift_scale_rotate
from rxvision.data.synth import generate_dataset
from rxvision.data.warp import warp_affine


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """A synthetic pill photo (240 px RGB)."""
    out = tmp_path_factory.mktemp("warp") / "ds"
    generate_dataset(out, classes=1, per_class=1, size=240, seed=4, workers=1)
    path = next(out.rglob("*.jpg"))
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _random_matrix(rng: np.random.Generator, centre: tuple[float, float]) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D(centre, float(rng.uniform(-180, 180)), rng.uniform(0.7, 1.3))
    matrix[:, 2] += rng.normal(size=2) * 12
    return matrix


@pytest.mark.parametrize(
    ("border", "value"),
    [(cv2.BORDER_REPLICATE, 0), (cv2.BORDER_REFLECT_101, 0), (cv2.BORDER_CONSTANT, (255, 40, 7))],
)
def test_warp_affine_equals_opencv_on_three_channels(
    photo: np.ndarray, border: int, value: int | tuple[int, int, int]
) -> None:
    rng = np.random.default_rng(3)
    for size in [(150, 150), (190, 96), (240, 240)]:
        for _ in range(8):
            matrix = _random_matrix(rng, (120.0, 120.0))
            expected = cv2.warpAffine(
                photo, matrix, size, flags=cv2.INTER_LINEAR, borderMode=border, borderValue=value
            )
            got = warp_affine(photo, matrix, size, border_mode=border, border_value=value)
            assert got.shape == (size[1], size[0], 3) and got.flags.c_contiguous
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", ["grey", "rgba", "float", "nearest"])
def test_other_images_and_interpolations_are_warped_as_opencv_does(
    photo: np.ndarray, kind: str
) -> None:
    image = {
        "grey": photo[..., 1].copy(),
        "rgba": cv2.cvtColor(photo, cv2.COLOR_RGB2RGBA),
        "float": photo.astype(np.float32) / 255,
    }.get(kind, photo)
    flags = cv2.INTER_NEAREST if kind == "nearest" else cv2.INTER_LINEAR
    matrix = _random_matrix(np.random.default_rng(5), (100.0, 110.0))
    expected = cv2.warpAffine(
        image, matrix, (128, 128), flags=flags, borderMode=cv2.BORDER_REPLICATE
    )
    got = warp_affine(
        image, matrix, (128, 128), border_mode=cv2.BORDER_REPLICATE, interpolation=flags
    )
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("crop", [(224, 224), (96, 160)])
def test_the_affine_augmentation_gives_albumentations_pixels_and_random_stream(
    photo: np.ndarray, crop: tuple[int, int]
) -> None:
    image = np.ascontiguousarray(photo[: crop[0], : crop[1]])

    def pipeline(affine: A.BasicTransform) -> A.Compose:
        # a later random transform shows that both drew the same parameters
        return A.Compose([affine, A.ColorJitter(p=0.5)], seed=11)

    settings = {
        "translate_percent": {"x": (-0.0625, 0.0625), "y": (-0.0625, 0.0625)},
        "scale": (0.9, 1.1),
        "rotate": (-45, 45),
        "shear": 0.0,
        "interpolation": cv2.INTER_LINEAR,
        "border_mode": cv2.BORDER_REPLICATE,
        "balanced_scale": False,
        "p": 0.7,
    }
    before = pipeline(A.Affine(**settings))
    after = pipeline(FourChannelAffine(**settings))
    warped = 0
    for _ in range(24):
        old, new = before(image=image)["image"], after(image=image)["image"]
        np.testing.assert_array_equal(new, old)
        warped += not np.array_equal(new, image)
    assert warped > 10  # the warps did happen


def test_training_uses_the_four_channel_affine() -> None:
    assert isinstance(shift_scale_rotate(), FourChannelAffine)


def test_the_decode_workers_modules_import_neither_albumentations_nor_torch() -> None:
    # the scoring job's and preprocessing's worker processes import the decoder: a
    # training library there cost each worker ~100 MB and its start-up (measured: peak
    # memory of `data preprocess` at 10,000 photos +480 MB)
    script = (
        "import sys\n"
        "import rxvision.serving.isolated_decode, rxvision.data.imaging, rxvision.data.warp\n"
        "import rxvision.data.decoder_warmup\n"
        "print(sorted(m for m in ('albumentations', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
