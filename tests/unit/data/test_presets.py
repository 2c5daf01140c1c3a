"""Train/eval presets on albumentations 2.0.x: shapes, determinism, no deprecated API."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from rxvision.data.collate import collate_channels_last
from rxvision.data.imaging import PreprocessingMismatch
from rxvision.data.presets import (
    EvalPreset,
    HalfTurn,
    ImagePreprocessor,
    QuarterTurns,
    TrainPreset,
    flip,
    normalize_batch,
    shift_scale_rotate,
)
from rxvision.errors import ConfigError

pytestmark = pytest.mark.unit


def pixels(height: int, width: int | None = None) -> np.ndarray:
    """An image as ``load_image`` hands it over: already at the preset's size."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(height, width or height, 3), dtype=np.uint8)


@pytest.fixture
def image() -> np.ndarray:
    return pixels(64)


def test_import_and_use_raise_no_warning() -> None:
    """A fresh interpreter with every warning an error: no deprecated transform, no
    update check (which would warn, and needs the network)."""
    code = (
        "import numpy as np\n"
        "from rxvision.data.presets import EvalPreset, ImagePreprocessor, TrainPreset\n"
        "x = np.zeros((32, 32, 3), dtype=np.uint8)\n"
        "TrainPreset(img_size=32)(x); EvalPreset(img_size=32)(x)\n"
        "ImagePreprocessor(img_size=(32, 32))(x)\n"
        "ImagePreprocessor(img_size=(32, 32), augment=False, normalize=False)(x)\n"
        "import os; assert os.environ['NO_ALBUMENTATIONS_UPDATE'] == '1'\n"
    )
    # without the variable: presets.py itself must turn the update check off
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr


def test_building_and_calling_raise_no_warning(image: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        presets = (
            TrainPreset(img_size=64),
            EvalPreset(img_size=64),
            ImagePreprocessor(img_size=(64, 64)),
        )
        for preset in presets:
            preset(image)


def test_train_output_is_a_normalized_tensor() -> None:
    out = TrainPreset(img_size=96)(pixels(96))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (3, 96, 96) and out.dtype == torch.float32
    assert out.min() < 0 < out.max()  # mean subtracted


def test_normalized_in_batch_is_the_same_model_input() -> None:
    images = [pixels(96)[::-1].copy(), pixels(96), pixels(96)[:, ::-1].copy()]
    per_image = torch.stack([TrainPreset(img_size=96, seed=5)(i) for i in images])
    deferred = TrainPreset(img_size=96, seed=5, normalize_in_batch=True)
    raw = torch.stack([deferred(i) for i in images])
    assert raw.dtype == torch.uint8 and raw.shape == (3, 3, 96, 96)
    # the same augmentation draws, the same normalization, to float rounding
    torch.testing.assert_close(normalize_batch(raw), per_image, atol=1e-5, rtol=0)
    evaluated = torch.stack([EvalPreset(img_size=96)(i) for i in images])
    as_batch = torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in images])
    torch.testing.assert_close(normalize_batch(as_batch), evaluated, atol=1e-5, rtol=0)


def test_a_channels_last_batch_is_normalized_to_the_same_values() -> None:
    images = [pixels(96), pixels(96)[::-1].copy(), pixels(96)[:, ::-1].copy()]
    deferred = TrainPreset(img_size=96, seed=5, normalize_in_batch=True)
    deferred.reseed(5)
    nchw = torch.stack([deferred(i) for i in images])
    deferred.reseed(5)
    channels_last, _ = collate_channels_last([(deferred(i), 0) for i in images])
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last, nchw)

    out = normalize_batch(channels_last)

    assert torch.equal(out, normalize_batch(nchw.contiguous()))  # bit for bit
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_normalize_batch_refuses_what_is_not_a_uint8_batch() -> None:
    with pytest.raises(ValueError, match=r"uint8 NCHW batch, got torch.float32"):
        normalize_batch(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(3, 8, 8\)"):
        normalize_batch(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_eval_is_deterministic() -> None:
    preset = EvalPreset(img_size=(64, 80))
    first, second = preset(pixels(64, 80)), preset(pixels(64, 80))
    assert first.shape == (3, 64, 80)
    assert torch.equal(first, second)


def test_presets_never_resize_another_way(image: np.ndarray) -> None:
    # an array of another size was not decoded by load_image at the model's spec
    with pytest.raises(PreprocessingMismatch, match="image of 64x64 px given to a 48x48"):
        EvalPreset(img_size=48)(image)
    with pytest.raises(PreprocessingMismatch, match="load_image"):
        TrainPreset(img_size=48)(image)


def test_augmentation_is_seeded_and_reseedable(image: np.ndarray) -> None:
    def draws(preset: TrainPreset) -> list[torch.Tensor]:
        return [preset(image) for _ in range(4)]

    a, b = draws(TrainPreset(img_size=64, seed=7)), draws(TrainPreset(img_size=64, seed=7))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    other = TrainPreset(img_size=64, seed=7)
    other.reseed(8)  # what each DataLoader worker does with its own seed
    assert not all(torch.equal(x, y) for x, y in zip(a, draws(other), strict=True))


def test_train_augments(image: np.ndarray) -> None:
    preset = TrainPreset(img_size=64, rotate90_p=1.0, flip_p=1.0, affine_p=1.0)
    reference = EvalPreset(img_size=64)(image)
    assert not torch.equal(preset(image), reference)


def test_without_normalize_values_are_in_unit_range() -> None:
    out = ImagePreprocessor(img_size=(32, 32), normalize=False, augment=False)(pixels(32))
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_flip_has_the_effect_of_the_old_a_flip() -> None:
    x = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    allowed = [x[:, ::-1], x[::-1, :], x[::-1, ::-1]]
    transform = A.Compose([flip(p=1.0)], seed=3)
    seen = set()
    for _ in range(40):
        out = transform(image=x)["image"]
        matches = [k for k, candidate in enumerate(allowed) if np.array_equal(out, candidate)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1, 2}


@pytest.mark.parametrize("shape", [(64, 64, 3), (48, 80, 3), (32, 32, 1)])
def test_cv2_turns_give_albumentations_pixels_and_random_stream(
    shape: tuple[int, int, int],
) -> None:
    # the turns are made by cv2 for speed: the same parameters drawn (so every later
    # augmentation of a seeded run is unchanged) and the same pixels as before
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    if shape[2] == 1:
        image = image[..., 0]
    square = shape[0] == shape[1]

    def pipeline(turns: list[A.BasicTransform]) -> A.Compose:
        return A.Compose([*turns, shift_scale_rotate(0.5)], seed=7)

    replicate = {"border_mode": cv2.BORDER_REPLICATE}
    before = pipeline(
        [
            *([A.RandomRotate90(p=0.5)] if square else []),
            A.Rotate(limit=(180, 180), p=0.5, **replicate),
        ]
    )
    after = pipeline([*([QuarterTurns(p=0.5)] if square else []), HalfTurn(p=0.5)])
    turned = 0
    for _ in range(64):
        old, new = before(image=image)["image"], after(image=image)["image"]
        assert new.flags.c_contiguous
        np.testing.assert_array_equal(new, old)
        turned += not np.array_equal(new, image)
    assert turned > 32  # the turns and the affine did happen


def test_quarter_turns_match_numpy_for_each_factor() -> None:
    image = pixels(16, 16)
    turns = QuarterTurns(p=1.0)
    for factor in range(4):
        np.testing.assert_array_equal(turns.apply(image, factor), np.rot90(image, factor))


def test_shift_scale_rotate_keeps_the_old_ranges() -> None:
    affine = shift_scale_rotate()
    assert isinstance(affine, A.Affine)
    assert affine.p == 0.5
    assert tuple(affine.rotate) == (-45, 45)
    assert tuple(affine.scale["x"]) == pytest.approx((0.9, 1.1))
    assert tuple(affine.translate_percent["x"]) == pytest.approx((-0.0625, 0.0625))


def test_preprocessor_picks_the_preset() -> None:
    assert isinstance(ImagePreprocessor().preset, TrainPreset)
    assert isinstance(ImagePreprocessor(augment=False).preset, EvalPreset)
    assert isinstance(ImagePreprocessor().transform, A.Compose)


def test_preprocessor_accepts_pil_images() -> None:
    picture = Image.new("L", (50, 40), 128)
    out = ImagePreprocessor(img_size=(32, 32), augment=False)(picture)
    assert out.shape == (3, 32, 32)


def test_bad_sizes_name_the_value() -> None:
    with pytest.raises(ConfigError, match="not square"):
        TrainPreset(img_size=(64, 96))
    assert TrainPreset(img_size=(64, 96), rotate90_p=0.0).img_size == (64, 96)
    with pytest.raises(ConfigError, match="positive"):
        EvalPreset(img_size=0)


def test_batch_normalization_without_normalize_is_refused() -> None:
    with pytest.raises(ConfigError, match="normalize_in_batch=True with normalize=False"):
        TrainPreset(img_size=32, normalize=False, normalize_in_batch=True)
    assert TrainPreset(img_size=32, normalize_in_batch=True).img_size == (32, 32)
