"""Pill photos drawn without ``rxvision.data.synth``: another drawing, to check that the
look-alike recipe relies on nothing of the built-in generator.

OpenCV primitives and its Hershey font (the generator uses Pillow and a TrueType font),
surface colours drawn uniformly at random (the generator picks from a palette), the pill
anywhere in the frame at any size between a fifth and a half of it, a hard shadow or
none, a light gradient, sensor noise and JPEG. Six products, two imprint-only pairs:

- round white ``M5`` / ``M8`` (one glyph apart), ``RX 10`` capsule blue / ``RX 40``;
- an orange oval ``K``, a green square ``G2``.

``--conditions field`` draws a hold-out from other conditions: darker or brighter
surfaces than any training photo, stronger colour casts, a little blur.

    python bench/drawn_pills.py OUT --per-class 50 --seed 0
    python bench/drawn_pills.py HOLDOUT --per-class 25 --seed 1 --conditions field
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SIZE = 256


@dataclass(frozen=True)
class DrawnProduct:
    """A product as this script draws it."""

    label: str
    shape: str  # round, oval, capsule, square
    colour: tuple[int, int, int]  # RGB
    imprint: str


PRODUCTS = (
    DrawnProduct("m-5", "round", (236, 234, 228), "M5"),
    DrawnProduct("m-8", "round", (236, 234, 228), "M8"),
    DrawnProduct("rx-10", "capsule", (90, 140, 215), "RX 10"),
    DrawnProduct("rx-40", "capsule", (90, 140, 215), "RX 40"),
    DrawnProduct("k-oval", "oval", (235, 150, 60), "K"),
    DrawnProduct("g-square", "square", (110, 185, 110), "G2"),
)
PAIRS = (("m-5", "m-8"), ("rx-10", "rx-40"))
ASPECT = {"round": 1.0, "oval": 1.45, "capsule": 2.3, "square": 1.0}


def surface(rng: np.random.Generator, field: bool) -> np.ndarray:
    """A plain surface with a light gradient (RGB float32)."""
    if field:  # darker or brighter than any training surface
        level = rng.choice([rng.uniform(10, 45), rng.uniform(215, 250)])
    else:
        level = rng.uniform(50, 210)
    colour = np.clip(level * rng.uniform(0.6, 1.4, size=3), 0, 255)
    ramp = np.linspace(1 - rng.uniform(0, 0.2), 1 + rng.uniform(0, 0.2), SIZE)
    photo = np.empty((SIZE, SIZE, 3), np.float32)
    photo[:] = colour
    photo *= ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None]
    return photo


def pill_mask(
    product: DrawnProduct, centre: tuple[int, int], length: int, angle: float
) -> np.ndarray:
    """The pill's silhouette (uint8 0/255) at ``angle`` degrees."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    half_l, half_w = length / 2, length / (2 * ASPECT[product.shape])
    if product.shape in ("round", "oval"):
        cv2.ellipse(mask, centre, (int(half_l), int(half_w)), angle, 0, 360, 255, -1, cv2.LINE_AA)
        return mask
    theta = math.radians(angle)
    axis = np.array([math.cos(theta), math.sin(theta)])
    normal = np.array([-math.sin(theta), math.cos(theta)])
    c = np.array(centre, dtype=np.float64)
    if product.shape == "square":
        corners = [
            c + sx * half_l * axis + sy * half_w * normal
            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        ]
        cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 255, cv2.LINE_AA)
        return mask
    # capsule: a bar with round ends
    reach = half_l - half_w
    a, b = c - reach * axis, c + reach * axis
    cv2.line(
        mask,
        tuple(np.round(a).astype(int)),
        tuple(np.round(b).astype(int)),
        255,
        int(2 * half_w),
        cv2.LINE_AA,
    )
    for end in (a, b):
        cv2.circle(mask, tuple(np.round(end).astype(int)), int(half_w), 255, -1, cv2.LINE_AA)
    return mask


def imprint_layer(
    product: DrawnProduct, centre: tuple[int, int], length: int, angle: float
) -> np.ndarray:
    """The imprint's ink (uint8 0/255), centred on the pill and turned with it."""
    text = np.zeros((SIZE, SIZE), np.uint8)
    scale = length / (60.0 + 18.0 * len(product.imprint))
    thickness = max(1, round(length / 40))
    (w, h), _ = cv2.getTextSize(product.imprint, cv2.FONT_HERSHEY_DUPLEX, scale, thickness)
    origin = (centre[0] - w // 2, centre[1] + h // 2)
    cv2.putText(
        text, product.imprint, origin, cv2.FONT_HERSHEY_DUPLEX, scale, 255, thickness, cv2.LINE_AA
    )
    turn = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), -angle, 1.0)
    return cv2.warpAffine(text, turn, (SIZE, SIZE))


def draw_photo(product: DrawnProduct, rng: np.random.Generator, field: bool) -> np.ndarray:
    """One photograph of ``product`` (RGB uint8)."""
    photo = surface(rng, field)
    length = int(rng.uniform(0.2, 0.5) * SIZE * (1.5 if product.shape == "capsule" else 1.0))
    # the pill's farthest point from its centre (a square's corner), a shadow's offset
    margin = int(length * (0.71 if product.shape == "square" else 0.5)) + 10
    centre = (int(rng.uniform(margin, SIZE - margin)), int(rng.uniform(margin, SIZE - margin)))
    angle = float(rng.uniform(0, 360))
    mask = pill_mask(product, centre, length, angle).astype(np.float32) / 255
    if rng.random() < 0.6:  # a hard shadow, down and right
        offset = np.float32([[1, 0, rng.uniform(2, 8)], [0, 1, rng.uniform(2, 8)]])
        shadow = cv2.warpAffine(mask, offset, (SIZE, SIZE))
        photo *= (1 - 0.35 * shadow)[..., None]
    body = np.asarray(product.colour, np.float32) * rng.uniform(0.85, 1.1)
    photo = photo * (1 - mask[..., None]) + body * mask[..., None]
    ink = imprint_layer(product, centre, length, angle).astype(np.float32) / 255 * mask
    photo *= (1 - 0.65 * ink)[..., None]
    cast = rng.uniform(1 - (0.15 if field else 0.05), 1 + (0.15 if field else 0.05), size=3)
    photo = photo * cast + rng.normal(0, 3, size=photo.shape)
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    if field:
        photo = cv2.GaussianBlur(photo, (0, 0), rng.uniform(0.4, 1.0))
    return photo


def write_set(out: Path, per_class: int, seed: int, conditions: str) -> None:
    """``out/<product>/img-NNNNN.jpg`` for each product (refuses a non-empty ``out``)."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty")
    rng = np.random.default_rng(seed)
    for product in PRODUCTS:
        folder = out / product.label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            photo = draw_photo(product, rng, conditions == "field")
            quality = int(rng.integers(80, 96))
            bgr = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(folder / f"img-{i:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conditions", choices=["studio", "field"], default="studio")
    args = parser.parse_args()
    write_set(args.out, args.per_class, args.seed, args.conditions)
    print(f"wrote {len(PRODUCTS)} x {args.per_class} photos to {args.out}")


if __name__ == "__main__":
    main()
