"""Planted defects (``generate_dataset(defects=True)``): bad files named like good ones,
for demos of the validator, each with the reason code the validator must give it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import numpy as np
from PIL import Image

from rxvision.data.synth.catalog import Product
from rxvision.data.synth.output import Row, write_atomic
from rxvision.data.synth.photo import encode_jpeg, image_rng, render_pill_photo

# Planted defects: the validator reason code each one must get (see docs/data-validation.md).
DEFECT_CORRUPT = "corrupt"
DEFECT_EMPTY = "empty_file"
DEFECT_GRAYSCALE = "not_rgb"
DEFECT_TOO_SMALL = "too_small"
DEFECT_DUPLICATE = "label_conflict"

# (class position, defect code): class 0 and 1 hold the planted files.
DEFECT_PLAN = (
    (0, DEFECT_CORRUPT),
    (0, DEFECT_EMPTY),
    (1, DEFECT_GRAYSCALE),
    (1, DEFECT_TOO_SMALL),
    (1, DEFECT_DUPLICATE),
)


@dataclass(frozen=True)
class PlantedDefect:
    """A bad file planted by ``defects=True`` and the reason code the validator must give."""

    path: str
    code: str


def plant_defects(
    out: Path,
    products: list[Product],
    per_class: int,
    size: int,
    seed: int,
    rows: list[Row],
) -> Iterator[Row]:
    """Bad files named like good ones (``img-NNNNN.jpg`` after the last good index)."""
    next_index = {0: per_class, 1: per_class}
    for class_pos, code in DEFECT_PLAN:
        product = products[class_pos]
        index = next_index[class_pos]
        next_index[class_pos] += 1
        relpath = f"{product.label}/img-{index:05d}.jpg"
        rng = image_rng(seed, product.index, index)
        data, width, height = _defect_bytes(code, product, rng, size, out, rows)
        write_atomic(out / relpath, data)
        digest = sha256(data).hexdigest()
        yield Row(relpath, product.label, digest, width, height, None, code)


def _defect_bytes(
    code: str,
    product: Product,
    rng: np.random.Generator,
    size: int,
    out: Path,
    rows: list[Row],
) -> tuple[bytes, int | None, int | None]:
    if code == DEFECT_EMPTY:
        return b"", None, None
    if code == DEFECT_DUPLICATE:
        # the same bytes as the first image of the first product, filed under another one
        source = rows[0]
        return (out / source.path).read_bytes(), source.width, source.height
    image, _ = render_pill_photo(product, rng, size)
    if code == DEFECT_GRAYSCALE:
        image = image.convert("L")
    elif code == DEFECT_TOO_SMALL:
        image = image.resize((size // 2, size // 2), Image.Resampling.BOX)
    data = encode_jpeg(image, rng)
    if code == DEFECT_CORRUPT:
        data = data[: len(data) * 6 // 10]  # header intact, scan data cut: a truncated JPEG
    return data, image.width, image.height
