"""Image transforms for training and evaluation (albumentations 2.0.x).

``TrainPreset`` and ``EvalPreset`` follow torchvision's references/classification
presets: one class per stage, keyword-only arguments. Scoring reuses ``EvalPreset``.
``ImagePreprocessor`` is the seed's dataclass; it picks one of the two.

Neither resizes: images arrive at ``img_size`` from ``rxvision.data.imaging.load_image``,
the one decode-and-resize function that training, evaluation and scoring share (a PIL
image given here goes through it too). An array of another size is refused, never
silently resized another way.

Augmentation is seeded: ``TrainPreset(seed=...)`` and, in each DataLoader worker,
``seed_worker_transform`` reseeds it from the worker's own torch seed, so workers draw
different augmentations and two runs with the same seed draw the same ones.

The seed's ``A.Flip`` and ``A.ShiftScaleRotate`` are deprecated in albumentations 2.x;
here they are replaced with transforms of the same effect:

- ``A.Flip(p)`` flipped horizontally, vertically or both, chosen at random:
  ``A.OneOf([HorizontalFlip, VerticalFlip, HorizontalFlip + VerticalFlip], p)``.
- ``A.ShiftScaleRotate(p)`` (shift 0.0625, scale 0.1, rotate 45, bilinear, reflected
  border in 1.x) is ``A.Affine`` with the same ranges; ``balanced_scale`` off keeps the
  scale uniform in [0.9, 1.1] as before. The border is replicated, not reflected: on a
  tight pill crop a mirrored border would draw a second pill.
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

from rxvision.data.imaging import ImageSpec, PreprocessingMismatch, resize_image
from rxvision.data.warp import is_rgb_bytes, warp_affine
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
    """The effect of albumentations 1.x ``A.ShiftScaleRotate(p)`` with its defaults (an
    RGB image warped on four channels: ``rxvision.data.warp``)."""
    return FourChannelAffine(
        translate_percent={"x": (-shift_limit, shift_limit), "y": (-shift_limit, shift_limit)},
        scale=(1.0 - scale_limit, 1.0 + scale_limit),
        rotate=(-rotate_limit, rotate_limit),
        shear=0.0,
        interpolation=cv2.INTER_LINEAR,
        # replicate, not reflect: a mirrored pill at a crop's border would be a second pill
        border_mode=cv2.BORDER_REPLICATE,
        balanced_scale=False,
        p=p,
    )


class FourChannelAffine(A.Affine):
    """``A.Affine``: the same parameters drawn (the same random stream), an RGB image's
    bilinear warp made by ``warp_affine``; any other image as albumentations does."""

    def apply(
        self,
        img: np.ndarray,
        matrix: np.ndarray,
        output_shape: tuple[int, int],
        **params: Any,
    ) -> np.ndarray:
        """``img`` warped by ``matrix`` (3x3) to ``output_shape`` (height, width)."""
        if not is_rgb_bytes(img) or self.interpolation != cv2.INTER_LINEAR:
            return super().apply(img, matrix, output_shape, **params)
        height, width = (int(np.round(side)) for side in output_shape)
        return warp_affine(
            img,
            matrix[:2, :],
            (width, height),
            border_mode=self.border_mode,
            border_value=self.fill,
        )


# cv2.rotate and cv2.flip for the exact quarter and half turns: the same pixels as
# albumentations' numpy views, which its pipeline then copies contiguous element by
# element (~0.1-0.2 ms for a 224 px image, measured; cv2 ~5-15 us)
_ROT90_CODES = {
    1: cv2.ROTATE_90_COUNTERCLOCKWISE,
    2: cv2.ROTATE_180,
    3: cv2.ROTATE_90_CLOCKWISE,
}


class QuarterTurns(A.RandomRotate90):
    """``A.RandomRotate90`` drawing the same turns (the same random stream), each turn
    made by ``cv2.rotate``: the same pixels as ``np.rot90``, contiguous, without its copy."""

    def apply(self, img: np.ndarray, factor: int, **params: Any) -> np.ndarray:
        """``img`` turned ``factor`` quarter turns counterclockwise."""
        if factor % 4 == 0:
            return img
        return cv2.rotate(img, _ROT90_CODES[factor % 4])


class HalfTurn(A.Rotate):
    """``A.Rotate(limit=(180, 180))``: the same parameters drawn, the half turn made by
    ``cv2.flip`` on both axes (the same pixels as the interpolated warp, tested; ~50x
    cheaper)."""

    def __init__(self, *, p: float) -> None:
        super().__init__(limit=(180, 180), border_mode=cv2.BORDER_REPLICATE, p=p)

    def apply(self, img: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:
        """``img`` turned by 180 degrees (the warp for any other matrix)."""
        if np.allclose(matrix[:2, :2], [[-1.0, 0.0], [0.0, -1.0]], atol=1e-9):
            return cv2.flip(img, -1)
        return super().apply(img, matrix, **params)


class _Preset:
    """Shared call: an HWC uint8 RGB array of ``img_size`` (or a PIL image, decoded by
    ``resize_image``) in, a CHW float tensor out."""

    transform: A.Compose
    img_size: tuple[int, int]

    def __call__(self, image: np.ndarray | Image.Image) -> torch.Tensor:
        """Transform one image."""
        height, width = self.img_size
        if isinstance(image, Image.Image):
            if height != width:
                raise ConfigError(f"img_size {self.img_size}: a PIL image needs a square size")
            image = resize_image(image, ImageSpec(img_size=height))
        if image.shape[:2] != (height, width):
            raise PreprocessingMismatch(
                f"image of {image.shape[1]}x{image.shape[0]} px given to a {width}x{height} "
                "preset: decode it with rxvision.data.imaging.load_image at the model's spec"
            )
        tensor: torch.Tensor = self.transform(image=image)["image"]
        return tensor


def normalize_batch(
    images: torch.Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """A uint8 NCHW batch as the float model input ``A.Normalize(mean, std,
    max_pixel_value=255)`` gives per image (to float rounding), on the batch's device."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected a uint8 NCHW batch, got {images.dtype} {tuple(images.shape)}")
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=images.device)
    shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)], device=images.device)
    if images.shape[1] > 1 and images.is_contiguous(memory_format=torch.channels_last):
        # channels innermost (``collate_channels_last``): broadcasting a per-channel
        # factor over an innermost dimension of 3 defeats vectorization (2x slower than
        # NCHW, measured); over rows of W * C values with the factors tiled it is 2x
        # faster than NCHW. The same values, channels-last out.
        n, c, h, w = images.shape
        rows = images.permute(0, 2, 3, 1).reshape(n, h, w * c)
        out = rows.float().mul_(scale.repeat(w)).sub_(shift.repeat(w))
        return out.view(n, h, w, c).permute(0, 3, 1, 2)
    shape = (1, -1, 1, 1)
    return images.float().mul_(scale.view(shape)).sub_(shift.view(shape))


def seed_worker_transform(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Lightning's per-worker seeding of torch, NumPy and
    ``random``, then the dataset's augmentation reseeded from this worker's torch seed
    (forked workers would otherwise all replay the parent's augmentation sequence)."""
    from lightning_fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if info is not None and isinstance(transform, TrainPreset):
        transform.reseed(info.seed % 2**32)


class TrainPreset(_Preset):
    """Training transforms: the seed's augmentations, normalize, to tensor.

    With ``normalize_in_batch`` the tensor stays uint8 (CHW) and the model normalizes the
    batch after it reached its device (``normalize_batch``, in the LightningModule's
    ``on_after_batch_transfer``): the same input, computed once per batch."""

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
        rotate180_p: float = 0.0,
        color_p: float = 0.0,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
        cast_limit: float = 0.0,
        blur_p: float = 0.0,
        seed: int | None = 0,
        normalize_in_batch: bool = False,
    ) -> None:
        height, width = _hw(img_size)
        if normalize_in_batch and not normalize:
            # normalize_batch always applies mean/std: the pair would silently disagree
            raise ConfigError(
                "normalize_in_batch=True with normalize=False: normalize_batch applies the "
                "mean and std; keep normalize=True or normalize per image"
            )
        if height != width and rotate90_p > 0:
            raise ConfigError(
                f"img_size {img_size} is not square: RandomRotate90 would change the shape; "
                "use a square size or rotate90_p=0"
            )
        self.img_size = (height, width)
        self.transform = A.Compose(
            [
                QuarterTurns(p=rotate90_p),
                # a levelled pill (by its shape or its imprint) comes either way up
                HalfTurn(p=rotate180_p),
                flip(flip_p),
                shift_scale_rotate(
                    affine_p,
                    shift_limit=shift_limit,
                    scale_limit=scale_limit,
                    rotate_limit=rotate_limit,
                ),
                # photos come from other cameras and lights: exposure, contrast, white
                # balance, focus
                A.ColorJitter(
                    brightness=brightness,
                    contrast=contrast,
                    saturation=saturation,
                    hue=hue,
                    p=color_p,
                ),
                # a white balance off by up to cast_limit per channel
                A.MultiplicativeNoise(
                    multiplier=(1.0 - cast_limit, 1.0 + cast_limit),
                    per_channel=True,
                    p=color_p if cast_limit > 0 else 0.0,
                ),
                A.GaussianBlur(blur_limit=(3, 5), p=blur_p),
                # normalize_in_batch: a uint8 CHW tensor out, and ``normalize_batch`` on
                # the whole batch, on its device (4x fewer bytes from a worker, one
                # vectorized op instead of one per image)
                *([] if normalize_in_batch else [_normalize(normalize, mean, std)]),
                ToTensorV2(),
            ],
            seed=seed,
        )

    def reseed(self, seed: int) -> None:
        """Restart the augmentation's random stream from ``seed``."""
        self.transform.set_random_seed(seed)


class EvalPreset(_Preset):
    """Deterministic transforms for validation, test and scoring: normalize, to tensor
    (the image is already at ``img_size``, from ``load_image``)."""

    def __init__(
        self,
        *,
        img_size: Size = 224,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        normalize: bool = True,
    ) -> None:
        self.img_size = _hw(img_size)
        self.transform = A.Compose([_normalize(normalize, mean, std), ToTensorV2()])


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
