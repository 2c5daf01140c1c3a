"""One small photo decoded in the forkserver of the worker pools (``rxvision.pool_worker``
calls ``warm_up``), so that every worker forked from the server starts warm.

A process's first decode pays one-time set-up: OpenCV builds its CIELAB tables on the
first RGB -> Lab conversion (~115 ms here), Pillow imports its JPEG plugin and NumPy a few
modules (~45 ms). Each decode worker paid that on its first image: ~100-150 ms of CPU per
worker started, on the scoring job's critical path (its first batch waits for it) and
again for every worker replaced after a crash. Done once in the server, the tables are
inherited by each forked worker. A warm-up that fails costs nothing but the time: the
workers then warm themselves, as before.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageDraw

from rxvision.data.imaging import ImageSpec, decode_located
from rxvision.data.localize import CropSpec

log = logging.getLogger(__name__)

SIZE = 96  # px: large enough for the localization to find the disc, small to decode
# what this process's warm-up gave (None: not run, or failed): its workers inherit it
WARMED: str | None = None


def warm_decoder() -> str:
    """Decode a synthetic photo (a dark disc on a light surface) through the pill crop,
    exercising every first-call set-up; the localization status (``localized``)."""
    surface = Image.fromarray(np.full((SIZE, SIZE, 3), (214, 208, 196), np.uint8))
    ImageDraw.Draw(surface).ellipse((28, 34, 68, 62), fill=(120, 40, 40))
    encoded = io.BytesIO()
    surface.save(encoded, format="JPEG", quality=90)
    _, located = decode_located(encoded.getvalue(), ImageSpec(32, crop=CropSpec()))
    return located


def warm_up() -> None:
    """``warm_decoder``, never raising: a cold worker is only slower to start."""
    global WARMED
    try:
        WARMED = warm_decoder()
    except Exception as exc:
        log.warning("decoder warm-up failed (workers start cold): %s: %s", type(exc).__name__, exc)
