"""Train/eval presets on albumentations 2.0.x: shapes, determinism, no deprecated API."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from rxvision.data.presets import (
    EvalPreset,
    ImagePreprocessor,
    TrainPreset,
    flip,
    shift_scale_rotate,
)
from rxvision.errors import ConfigError

pytestmark = pytest.mark.unit


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(180, 150, 3), dtype=np.uint8)


def test_import_and_use_raise_no_warning() -> None:
    """A fresh interpreter with every warning an error: no deprecated transform, no
    update check (which would warn, and needs the network)."""
    code = (
        "import numpy as np\n"
        "from rxvision.data.presets import EvalPreset, ImagePreprocessor, TrainPreset\n"
        "x = np.zeros((64, 48, 3), dtype=np.uint8)\n"
        "TrainPreset(img_size=32)(x); EvalPreset(img_size=32, resize_size=40)(x)\n"
        "ImagePreprocessor()(x); ImagePreprocessor(augment=False, normalize=False)(x)\n"
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
        for preset in (TrainPreset(img_size=64), EvalPreset(img_size=64), ImagePreprocessor()):
            preset(image)


def test_train_output_is_a_normalized_tensor(image: np.ndarray) -> None:
    out = TrainPreset(img_size=96)(image)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (3, 96, 96) and out.dtype == torch.float32
    assert out.min() < 0 < out.max()  # mean subtracted


def test_eval_is_deterministic(image: np.ndarray) -> None:
    preset = EvalPreset(img_size=(64, 80))
    first, second = preset(image), preset(image)
    assert first.shape == (3, 64, 80)
    assert torch.equal(first, second)


def test_eval_crop_mode(image: np.ndarray) -> None:
    out = EvalPreset(img_size=64, resize_size=72)(image)
    assert out.shape == (3, 64, 64)


def test_train_augments(image: np.ndarray) -> None:
    preset = TrainPreset(img_size=64, rotate90_p=1.0, flip_p=1.0, affine_p=1.0)
    reference = EvalPreset(img_size=64)(image)
    assert not torch.equal(preset(image), reference)


def test_without_normalize_values_are_in_unit_range(image: np.ndarray) -> None:
    out = ImagePreprocessor(img_size=(32, 32), normalize=False, augment=False)(image)
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
    with pytest.raises(ConfigError, match="resize_size 50"):
        EvalPreset(img_size=64, resize_size=50)
    with pytest.raises(ConfigError, match="positive"):
        EvalPreset(img_size=0)
