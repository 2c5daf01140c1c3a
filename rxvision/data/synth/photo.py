"""One photograph of a pill: the side shown, a surface ("studio" or "field" palette) with
texture, pose, scale, cast shadow, lighting and colour cast, blur, sensor noise and JPEG
quality, all drawn from the image's own RNG (``image_rng``: seeded by seed, class and
index, so the bytes never depend on scheduling).
"""

from __future__ import annotations

import math
from io import BytesIO

import numpy as np
from PIL import Image, ImageFilter

from rxvision.data.synth.catalog import Product
from rxvision.data.synth.pill import SUPERSAMPLE, pill_sprite

BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (62, 104, 158),  # blue counting tray
    (40, 130, 120),  # teal counting tray
    (232, 232, 226),  # paper
    (128, 128, 130),  # grey bench
    (38, 38, 44),  # dark mat
    (200, 184, 158),  # beige
    (138, 98, 66),  # wood
    (90, 150, 90),  # green cutting mat
)
# "field" photographs: surfaces the "studio" set never shows, stronger colour casts and
# blur (a hold-out from other conditions than the training photos)
FIELD_BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (170, 60, 60),  # red tray
    (236, 210, 120),  # yellow paper
    (70, 70, 110),  # navy cloth
    (180, 200, 210),  # steel
    (110, 80, 120),  # plum mat
    (20, 20, 20),  # black glass
)
CONDITIONS = ("studio", "field")
BACK_PROBABILITY = 0.4


def render_pill_photo(
    product: Product, rng: np.random.Generator, size: int, *, conditions: str = "studio"
) -> tuple[Image.Image, str]:
    """One photograph of ``product`` (RGB, ``size`` x ``size``) and the side shown."""
    field = conditions == "field"
    side = "back" if rng.random() < BACK_PROBABILITY else "front"
    photo = _background(rng, size, FIELD_BACKGROUNDS if field else BACKGROUNDS)
    # The pill is drawn and rotated at 2x, then box-downsampled: antialiased edges and
    # glyphs; the rest of the scene is smooth, so it is composed at 1x.
    sprite = pill_sprite(product, side, rng, size * SUPERSAMPLE)
    angle = float(rng.uniform(0, 360))
    sprite = sprite.rotate(angle, Image.Resampling.BILINEAR, expand=True).reduce(SUPERSAMPLE)
    centre = rng.uniform(0.4, 0.6, size=2) * size
    corner = (int(centre[0] - sprite.width / 2), int(centre[1] - sprite.height / 2))
    _cast_shadow(photo, sprite, corner, rng, scale=size / 128)
    photo.paste(sprite, corner, sprite)
    photo = _light(photo, rng, cast=0.12 if field else 0.06)
    if field or rng.random() < 0.5:
        blur = rng.uniform(0.4, 1.1) if field else rng.uniform(0.2, 0.7)
        photo = photo.filter(ImageFilter.GaussianBlur(float(blur)))
    return _add_noise(photo, rng), side


def _background(
    rng: np.random.Generator, size: int, palette: tuple[tuple[int, int, int], ...] = BACKGROUNDS
) -> Image.Image:
    """A surface colour with low-frequency texture."""
    base = np.array(palette[rng.integers(len(palette))], dtype=np.float32)
    base = base * rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    coarse = max(4, size // 16)
    texture = rng.normal(0.0, rng.uniform(2.0, 8.0), size=(coarse, coarse, 1)).astype(np.float32)
    small = np.clip(base + texture, 0, 255).astype(np.uint8)
    return Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BILINEAR)


def _cast_shadow(
    photo: Image.Image,
    sprite: Image.Image,
    corner: tuple[int, int],
    rng: np.random.Generator,
    *,
    scale: float,
) -> None:
    """Darken the surface (in place) under an offset, blurred copy of the pill's outline."""
    radius = float(rng.uniform(2.0, 5.0)) * scale
    margin = int(3 * radius) + 1
    shadow = Image.new("L", (sprite.width + 2 * margin, sprite.height + 2 * margin), 0)
    shadow.paste(sprite.getchannel("A"), (margin, margin))
    strength = float(rng.uniform(0.25, 0.5))
    shadow = shadow.filter(ImageFilter.GaussianBlur(radius)).point(lambda v: int(v * strength))
    offset = rng.uniform(2.0, 7.0, size=2) * scale * rng.choice([-1, 1], size=2)
    at = (corner[0] - margin + int(offset[0]), corner[1] - margin + int(offset[1]))
    # pasting black through the mask blends: pixel * (1 - mask / 255)
    photo.paste((0, 0, 0), (*at, at[0] + shadow.width, at[1] + shadow.height), shadow)


def _light(photo: Image.Image, rng: np.random.Generator, cast: float = 0.06) -> Image.Image:
    """Global brightness, a colour cast (up to ``cast`` per channel) and a gradient."""
    w, h = photo.size
    gain = rng.uniform(0.8, 1.15) * rng.uniform(1 - cast, 1 + cast, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    slope = rng.uniform(0.0, 0.25)
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)
    ramp = 1.0 + slope * (xs[None, :] * math.cos(angle) + ys[:, None] * math.sin(angle))
    lit = np.asarray(photo, dtype=np.float32) * ramp[..., None] * gain.astype(np.float32)
    return Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8), "RGB")


def _add_noise(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Sensor noise, on luminance only (a third of the random numbers for the same look)."""
    sigma = rng.uniform(0.0, 5.0)
    pixels = np.asarray(photo, dtype=np.float32)
    grain = rng.standard_normal(size=(*pixels.shape[:2], 1), dtype=np.float32)
    return Image.fromarray(np.clip(pixels + sigma * grain, 0, 255).astype(np.uint8), "RGB")


def image_rng(seed: int, class_index: int, index: int) -> np.random.Generator:
    """The RNG of one image: depends only on (seed, class, index), never on scheduling."""
    return np.random.default_rng(np.random.SeedSequence([seed, class_index, index]))


def encode_jpeg(image: Image.Image, rng: np.random.Generator) -> bytes:
    """The photo as JPEG bytes, at a quality drawn from ``rng`` (75-95)."""
    buffer = BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(75, 96)))
    return buffer.getvalue()
