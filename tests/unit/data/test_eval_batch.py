"""The evaluation preset on a whole batch: the per-image preset's values, bit for bit."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from rxvision.data.eval_batch import EvalBatch
from rxvision.data.imaging import ImageSpec, PreprocessingMismatch, load_image
from rxvision.data.presets import EvalPreset

pytestmark = pytest.mark.unit


def crops(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def per_image(preset: EvalPreset, images: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.stack([preset(image) for image in images])


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("size", [96, (64, 48)])
def test_a_batch_is_the_per_image_preset_stacked(
    normalize: bool, size: int | tuple[int, int]
) -> None:
    preset = EvalPreset(img_size=size, normalize=normalize)
    height, width = preset.img_size
    images = crops(7, height, width)
    batch = EvalBatch(preset)
    assert batch.exact
    out = batch(images)
    assert out.dtype == torch.float32 and out.shape == (7, 3, height, width)
    assert out.is_contiguous()
    assert torch.equal(out, per_image(preset, images))


def test_every_value_of_every_channel_maps_as_the_preset_maps_it() -> None:
    preset = EvalPreset(img_size=16, mean=(0.1, 0.5, 0.9), std=(0.3, 0.2, 0.1))
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = np.stack([values, values[::-1], values.T], axis=2)
    assert torch.equal(EvalBatch(preset)([image]), per_image(preset, [image]))


def test_decoded_photos_give_the_model_input_training_evaluated(synth_root: Path) -> None:
    spec = ImageSpec(img_size=112)
    photos = [load_image(path, spec) for path in sorted(synth_root.rglob("*.jpg"))[:8]]
    assert len(photos) == 8
    preset = EvalPreset(img_size=112)
    assert torch.equal(EvalBatch(preset)(photos), per_image(preset, photos))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((96, 95, 3), np.uint8),
        np.zeros((96, 96), np.uint8),
        np.zeros((96, 96, 4), np.uint8),
        np.zeros((96, 96, 3), np.float32),
    ],
)
def test_a_crop_of_another_shape_or_type_is_refused_by_its_shape(bad: np.ndarray) -> None:
    batch = EvalBatch(EvalPreset(img_size=96))
    with pytest.raises(PreprocessingMismatch, match=re.escape(f"shape {bad.shape}")):
        batch([*crops(2, 96, 96), bad])


def test_a_preset_that_is_not_per_value_is_batched_per_image(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    preset = EvalPreset(img_size=32)
    # a neighbourhood transform: no table can give it, so the batch must not use one
    preset.transform = A.Compose([A.Blur(blur_limit=(3, 3), p=1.0), A.Normalize(), ToTensorV2()])
    with caplog.at_level(logging.WARNING):
        batch = EvalBatch(preset)
    assert not batch.exact
    assert "not a per-value table" in caplog.text
    images = crops(3, 32, 32)
    assert torch.equal(batch(images), per_image(preset, images))
