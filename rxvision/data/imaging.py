"""The one decode-and-resize function: how any image file becomes model input pixels.

Training (the feature store and image folders), evaluation, export parity, INT8
calibration and scoring all call ``load_image`` with the model's ``ImageSpec``. The spec
is stored with each model version (the preprocessing contract, ``ImageSpec.to_dict``) and
checked when a model is loaded, so a model sees at scoring exactly the pixels it saw in
training: the same bytes give the same array, bit for bit.

With a ``crop`` (``rxvision.data.localize``), the pill is found, cropped tight and its long
axis levelled before the resize: a model trained on crops is always scored on crops. When
no single pill is found the whole frame is used, and ``load_image_located`` says why.

Shrinking is Pillow's ``resize``, which filters over the whole source footprint
(anti-aliased), after a JPEG draft decode at the smallest DCT scale that still covers the
target (fast, and itself an averaging reduction). cv2's bilinear resize (``A.Resize``)
samples four source pixels whatever the scale, so a 3,000 px photo shrunk to 64 px
aliases: imprint strokes turn to noise that training images never had.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from rxvision.data.localize import DISABLED, CropSpec, locate_pill
from rxvision.data.pill_crop import crop_pill, enhance_imprint
from rxvision.errors import ConfigError, RxVisionError

# Bump when load_image's output changes for the same bytes and spec: models carry the
# version they were trained with, and a model of another version is refused at load.
IMAGE_SPEC_VERSION = 2
# with a crop, JPEGs are decoded at >= this many times the target size: a pill that fills
# a quarter of the frame's width still gets full resolution
CROP_DECODE_FACTOR = 4

Resample = Literal["bilinear", "bicubic", "lanczos"]
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

# reason codes shared with the data validator (docs/data-validation.md)
EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
CORRUPT = "corrupt"
DECOMPRESSION_BOMB = "decompression_bomb"
FILE_TOO_LARGE = "file_too_large"


class ImageDecodeError(RxVisionError):
    """An image that cannot be decoded; ``code`` is the validator's reason code."""

    exit_code = 5  # docs/exit-codes.md: as Pillow's own decode errors

    def __init__(self, name: str, code: str, message: str) -> None:
        super().__init__(f"{name}: {code}: {message}")
        self.name = name
        self.code = code
        self.reason = f"{code}: {message}"


class PreprocessingMismatch(ConfigError):
    """Pixels prepared under one spec were about to meet a model trained under another."""


@dataclass(frozen=True)
class ImageSpec:
    """The preprocessing contract: square RGB of ``img_size`` px, resized with ``resample``."""

    img_size: int
    resample: Resample = "bilinear"
    version: int = IMAGE_SPEC_VERSION
    crop: CropSpec | None = None

    def __post_init__(self) -> None:
        if self.img_size < 1:
            raise ConfigError(f"img_size must be positive, got {self.img_size}")
        if self.resample not in _RESAMPLE:
            raise ConfigError(
                f"resample {self.resample!r} is not supported; choose from {', '.join(_RESAMPLE)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored with feature sets and model versions."""
        data = asdict(self)
        data["crop"] = self.crop.to_dict() if self.crop is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str) -> ImageSpec:
        """Read a stored spec; ``PreprocessingMismatch`` names ``source`` when it is
        missing, malformed or of another ``load_image`` version."""
        if not data:
            raise PreprocessingMismatch(
                f"{source} has no preprocessing contract: it was made before RxVision stored "
                "one; retrain it (or rebuild the feature set) so its pixels are known"
            )
        version = data.get("version")
        if version != IMAGE_SPEC_VERSION:
            raise PreprocessingMismatch(
                f"{source} was preprocessed with image spec version {version}; this RxVision "
                f"decodes with version {IMAGE_SPEC_VERSION}: retrain or rebuild it"
            )
        try:
            crop = CropSpec(**data["crop"]) if data.get("crop") else None
            return cls(
                img_size=int(data["img_size"]),
                resample=data["resample"],
                version=version,
                crop=crop,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PreprocessingMismatch(
                f"{source}: malformed preprocessing contract {data}"
            ) from exc

    def config_hash(self) -> str:
        """A stable hash of the settings that change the pixels."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def require_same(self, other: ImageSpec, *, what: str) -> None:
        """Raise ``PreprocessingMismatch`` when ``other`` (naming ``what``) differs."""
        if other != self:
            raise PreprocessingMismatch(
                f"{what} was preprocessed as {other.describe()}, but the model expects "
                f"{self.describe()}: rebuild it with the model's spec"
            )

    def describe(self) -> str:
        """``64 px bilinear (v2)``, ``96 px bilinear pill crop (v2)``."""
        crop = " pill crop" if self.crop is not None else ""
        return f"{self.img_size} px {self.resample}{crop} (v{self.version})"


def load_image(
    source: bytes | Path | str,
    spec: ImageSpec,
    *,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode ``source`` (file bytes or a path) as RGB, crop the pill when ``spec`` says
    so, and resize to ``spec``: an HWC uint8 array. ``ImageDecodeError`` (with the
    validator's reason code, naming ``name`` or the path) when it cannot; files over
    ``max_bytes`` or ``max_pixels`` are refused before their pixels are decoded."""
    return load_image_located(source, spec, max_pixels=max_pixels, max_bytes=max_bytes, name=name)[
        0
    ]


def load_image_located(
    source: bytes | Path | str,
    spec: ImageSpec,
    *,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    name: str | None = None,
) -> tuple[np.ndarray, str]:
    """``load_image`` and the localization status: ``localized``, a fallback reason
    (``empty``, ``two_pills``, ``cut``, ``fills_frame``: the whole frame was used) or
    ``disabled`` (the spec crops nothing)."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    label = name or (str(source) if isinstance(source, (str, Path)) else "image")
    return decode_located(data, spec, max_pixels=max_pixels, max_bytes=max_bytes, name=label)


def decode_resized(
    data: bytes,
    spec: ImageSpec,
    *,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    name: str = "image",
) -> np.ndarray:
    """``load_image`` on bytes already read."""
    return decode_located(data, spec, max_pixels=max_pixels, max_bytes=max_bytes, name=name)[0]


def decode_located(
    data: bytes,
    spec: ImageSpec,
    *,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    name: str = "image",
) -> tuple[np.ndarray, str]:
    """``load_image_located`` on bytes already read."""
    pixels, located, _ = _decode(data, spec, max_pixels=max_pixels, max_bytes=max_bytes, name=name)
    return pixels, located


def decode_hashed(
    data: bytes, spec: ImageSpec, *, name: str = "image"
) -> tuple[np.ndarray, str, int]:
    """``decode_located`` and the ``difference_hash`` of the whole photo (before any
    crop: a near-duplicate is a copy of the photo; masked crops of two photos of one
    product can look alike in a 9x8 thumbnail)."""
    pixels, located, frame = _decode(data, spec, max_pixels=None, max_bytes=None, name=name)
    return pixels, located, difference_hash(frame)


def _decode(
    data: bytes,
    spec: ImageSpec,
    *,
    max_pixels: int | None,
    max_bytes: int | None,
    name: str,
) -> tuple[np.ndarray, str, np.ndarray]:
    """The model's pixels, the localization status and the decoded whole frame."""
    if not data:
        raise ImageDecodeError(name, EMPTY_FILE, "file is empty (0 bytes)")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageDecodeError(
            name, FILE_TOO_LARGE, f"{len(data)} bytes, over the limit of {max_bytes}"
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageDecodeError(
                    name, DECOMPRESSION_BOMB, f"{width}x{height} pixels, over the limit"
                )
            return _resize_with_frame(image, spec)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(name, NOT_AN_IMAGE, "no known image format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(name, DECOMPRESSION_BOMB, str(exc)) from exc
    except Exception as exc:  # any decoder failure means the file cannot be used
        raise ImageDecodeError(name, CORRUPT, f"cannot decode: {exc}") from exc


def resize_image(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """An opened (not yet loaded) image as ``spec``'s square RGB uint8 array."""
    return resize_located(image, spec)[0]


def resize_located(image: Image.Image, spec: ImageSpec) -> tuple[np.ndarray, str]:
    """``resize_image`` and the localization status."""
    pixels, located, _ = _resize_with_frame(image, spec)
    return pixels, located


def _resize_with_frame(image: Image.Image, spec: ImageSpec) -> tuple[np.ndarray, str, np.ndarray]:
    size = spec.img_size
    if spec.crop is None:
        # JPEG only: decode at the smallest 1/2, 1/4 or 1/8 scale still >= the target
        image.draft("RGB", (size, size))
        pixels = _resized(_as_rgb(image), spec)
        return pixels, DISABLED, pixels
    target = size * CROP_DECODE_FACTOR
    image.draft("RGB", (target, target))
    rgb = np.asarray(_as_rgb(image))
    where = locate_pill(rgb, spec.crop)
    crop = crop_pill(rgb, where, spec.crop)
    pixels = enhance_imprint(_resized(Image.fromarray(crop), spec), spec.crop)
    return pixels, where.status, rgb


def _as_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB: itself when it is already (``convert`` would copy every pixel:
    ~13% of decoding a 240 px JPEG, measured), else converted."""
    return image if image.mode == "RGB" else image.convert("RGB")


def _resized(rgb: Image.Image, spec: ImageSpec) -> np.ndarray:
    size = spec.img_size
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), _RESAMPLE[spec.resample])
    return np.asarray(rgb, dtype=np.uint8)


def sha256_hex(data: bytes) -> str:
    """The content hash of a file's bytes (exact duplicates share it)."""
    return hashlib.sha256(data).hexdigest()


def difference_hash(pixels: np.ndarray) -> int:
    """A 64-bit perceptual hash (dHash) of an RGB array: brighter-than-right-neighbour bits
    of the 9x8 grey thumbnail. Re-encodes, rescales and small exposure changes of one photo
    differ in a few bits at most; unrelated photos in about half of them."""
    grey = Image.fromarray(pixels).convert("L").resize((9, 8), Image.Resampling.BOX)
    thumb = np.asarray(grey, dtype=np.int16)
    bits = (thumb[:, 1:] > thumb[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])
