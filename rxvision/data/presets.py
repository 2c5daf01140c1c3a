"""Image transforms for training and evaluation (albumentations 2.0.x).

``TrainPreset`` and ``EvalPreset`` follow torchvision's references/classification
presets: one class per stage, keyword-only arguments. Scoring reuses ``EvalPreset``.
``ImagePreprocessor`` is the seed's dataclass; it picks one of the two.

The seed's ``A.Flip`` and ``A.ShiftScaleRotate`` are deprecated in albumentations 2.x;
here they are replaced with transforms of the same effect:

- ``A.Flip(p)`` flipped horizontally, vertically or both, chosen at random:
  ``A.OneOf([HorizontalFlip, VerticalFlip, HorizontalFlip + VerticalFlip], p)``.
- ``A.ShiftScaleRotate(p)`` (shift 0.0625, scale 0.1, rotate 45, bilinear, reflected
  border in 1.x) is ``A.Affine`` with the same ranges; ``balanced_scale`` off keeps the
  scale uniform in [0.9, 1.1] as before.
"""

from __future__ import annotations

import os

# albumentations checks PyPI for a newer release at import: no network at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from dataclasses import dataclass, field
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image

from rxvision.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ConfigError(f"img_size must be positive, got {size}")
    return height, width


def _normalize(normalize: bool, mean: tuple[float, ...], std: tuple[float, ...]) -> A.Normalize:
    if normalize:
        return A.Normalize(mean=mean, std=std, max_pixel_value=255.0)
    # still a float tensor in [0, 1]: a uint8 tensor cannot go into a model
    return A.Normalize(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), max_pixel_value=255.0)


def flip(p: float = 0.5) -> A.OneOf:
    """The effect of albumentations 1.x ``A.Flip(p)``: flip on one axis or both."""
    return A.OneOf(
        [
            A.HorizontalFlip(p=1.0),
            A.VerticalFlip(p=1.0),
            A.Sequential([A.HorizontalFlip(p=1.0), A.VerticalFlip(p=1.0)], p=1.0),
        ],
        p=p,
    )


def shift_scale_rotate(
    p: float = 0.5,
    *,
    shift_limit: float = 0.0625,
    scale_limit: float = 0.1,
    rotate_limit: float = 45.0,
) -> A.Affine:
    """The effect of albumentations 1.x ``A.ShiftScaleRotate(p)`` with its defaults."""
    return A.Affine(
        translate_percent={"x": (-shift_limit, shift_limit), "y": (-shift_limit, shift_limit)},
        scale=(1.0 - scale_limit, 1.0 + scale_limit),
        rotate=(-rotate_limit, rotate_limit),
        shear=0.0,
        interpolation=cv2.INTER_LINEAR,
        border_mode=cv2.BORDER_REFLECT_101,
        balanced_scale=False,
        p=p,
    )


class _Preset:
    """Shared call: an HWC uint8 RGB array (or PIL image) in, a CHW float tensor out."""

    transform: A.Compose

    def __call__(self, image: np.ndarray | Image.Image) -> torch.Tensor:
        """Transform one image."""
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        tensor: torch.Tensor = self.transform(image=image)["image"]
        return tensor


class TrainPreset(_Preset):
    """Training transforms: resize, the seed's augmentations, normalize, to tensor."""

    def __init__(
        self,
        *,
        img_size: Size = 224,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        normalize: bool = True,
        rotate90_p: float = 0.5,
        flip_p: float = 0.5,
        affine_p: float = 0.5,
        shift_limit: float = 0.0625,
        scale_limit: float = 0.1,
        rotate_limit: float = 45.0,
    ) -> None:
        height, width = _hw(img_size)
        if height != width and rotate90_p > 0:
            raise ConfigError(
                f"img_size {img_size} is not square: RandomRotate90 would change the shape; "
                "use a square size or rotate90_p=0"
            )
        self.img_size = (height, width)
        self.transform = A.Compose(
            [
                A.Resize(height, width),
                A.RandomRotate90(p=rotate90_p),
                flip(flip_p),
                shift_scale_rotate(
                    affine_p,
                    shift_limit=shift_limit,
                    scale_limit=scale_limit,
                    rotate_limit=rotate_limit,
                ),
                _normalize(normalize, mean, std),
                ToTensorV2(),
            ]
        )


class EvalPreset(_Preset):
    """Deterministic transforms for validation, test and scoring.

    Without ``resize_size`` the image is resized to ``img_size`` (the whole pill stays in
    view); with it, the short side goes to ``resize_size`` and the centre ``img_size`` is
    cropped (torchvision's 256 -> 224 style).
    """

    def __init__(
        self,
        *,
        img_size: Size = 224,
        resize_size: int | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        normalize: bool = True,
    ) -> None:
        height, width = _hw(img_size)
        self.img_size = (height, width)
        geometry: list[Any]
        if resize_size is None:
            geometry = [A.Resize(height, width)]
        else:
            if resize_size < max(height, width):
                raise ConfigError(
                    f"resize_size {resize_size} is smaller than img_size {img_size}: "
                    "nothing left to crop"
                )
            geometry = [A.SmallestMaxSize(max_size=resize_size), A.CenterCrop(height, width)]
        self.transform = A.Compose([*geometry, _normalize(normalize, mean, std), ToTensorV2()])


@dataclass
class ImagePreprocessor:
    """The seed's preprocessor: train transforms when ``augment``, eval transforms otherwise."""

    img_size: tuple[int, int] = (224, 224)
    normalize: bool = True
    augment: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    preset: _Preset = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.augment:
            self.preset = TrainPreset(
                img_size=self.img_size, mean=self.mean, std=self.std, normalize=self.normalize
            )
        else:
            self.preset = EvalPreset(
                img_size=self.img_size, mean=self.mean, std=self.std, normalize=self.normalize
            )

    @property
    def transform(self) -> A.Compose:
        """The albumentations pipeline (the seed's attribute)."""
        return self.preset.transform

    def __call__(self, image: np.ndarray | Image.Image) -> torch.Tensor:
        """Transform one image into a CHW float tensor."""
        return self.preset(image)
