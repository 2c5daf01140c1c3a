"""Reference photos: one small picture of each product, kept with the model that learned it.

A training run logs, from its **train** split only (never a validation or test image:
those must stay unseen), the first image of each class as the model saw it (the
localization crop at the model's input size, before normalisation) as a JPEG thumbnail:

    references/index.json      {"classes": {"<class>": {"file", "path", "sha256"}}, ...}
    references/<file>.jpg      one per class

The review gallery (``rxvision.serving.review_gallery``) shows them beside each
candidate label, so a pharmacist compares the photo under review with what each
candidate product looks like. File names are derived from the class name but made safe
for any object store; ``index.json`` maps each class to its file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from PIL import Image

REFERENCES_DIR = "references"
REFERENCES_INDEX = f"{REFERENCES_DIR}/index.json"
# the model's input is 64-224 px; 128 px is enough to compare shapes, colours and
# imprints, and keeps one reference under ~6 KB
REFERENCE_PX = 128
REFERENCE_QUALITY = 85
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def reference_file(class_name: str) -> str:
    """A store-safe file name for a class's reference (a hash suffix keeps two classes
    that differ only in unsafe characters apart)."""
    stem = _UNSAFE.sub("_", class_name).strip("._")[:60] or "class"
    digest = hashlib.sha256(class_name.encode()).hexdigest()[:8]
    return f"{stem}-{digest}.jpg"


def thumbnail_jpeg(pixels: np.ndarray, max_px: int, quality: int) -> bytes:
    """An HWC uint8 RGB array as JPEG bytes (Huffman tables optimized), shrunk (never
    enlarged) to fit ``max_px``."""
    rgb = np.ascontiguousarray(pixels, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or max(rgb.shape[:2]) > max_px:
        image = Image.fromarray(rgb).convert("RGB")
        image.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
        rgb = np.asarray(image)
    # OpenCV's encoder: the same bytes as Pillow's save (both libjpeg-turbo, checked on
    # 200 crops), in two thirds of the time: a review gallery encodes one per flagged row
    options = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1]
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), options)
    if not ok:
        raise ValueError(f"cannot encode a {rgb.shape} image as JPEG")
    return encoded.tobytes()


def reference_index(sources: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """``index.json`` for ``{class: {"path", "sha256"}}`` (which training image each
    reference was made from: provenance a reviewer or an auditor can follow)."""
    return {
        "split": "train",
        "max_px": REFERENCE_PX,
        "classes": {
            name: {"file": reference_file(name), **dict(source)}
            for name, source in sorted(sources.items())
        },
    }
