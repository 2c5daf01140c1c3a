"""The pill crop: cut a found pill out of its photo, level, and make its imprint legible.

The crop is a square around the pill's minimum-area rectangle (``rxvision.data.localize``),
``margin`` of its long side added on every side, rotated first so that the long axis of an
elongated pill is horizontal (such a pill then appears in two orientations, not in 360:
the rest is left to augmentation). With ``stretch`` an elongated pill's crop is its own
rectangle with that margin, which the square resize stretches across: the imprint of a
capsule spans the model's whole height. A round pill is cropped without rotating, or
turned by its imprint's axis when it has one. With ``mask_background`` everything outside
the pill's outline is painted ``FILL`` (the normalization's mean): the model sees the pill,
never the surface it lies on. ``enhance_imprint`` equalizes the resized crop's lightness
locally so that an imprint's strokes stand out whatever the light.
"""

from __future__ import annotations

import cv2
import numpy as np

from rxvision.data.localize import CropSpec, Localization
from rxvision.data.warp import warp_affine

# the normalization's mean in uint8 RGB: a painted-out surface is zero after normalizing
FILL = (124, 116, 104)


def crop_pill(rgb: np.ndarray, where: Localization, spec: CropSpec) -> np.ndarray:
    """The square crop around a found pill (an elongated pill's own rectangle with
    ``stretch``), long axis level, the background painted ``FILL`` with
    ``mask_background`` (the whole frame when no pill was found)."""
    if not where.found:
        return rgb
    cx, cy = where.center
    width = max(2, round(where.size[0] * (1 + 2 * spec.margin)))
    height = width
    if spec.stretch and where.elongated:
        # the levelled pill's own rectangle, the short side with the long side's border
        height = max(2, round(where.size[1] + 2 * spec.margin * where.size[0]))
    # one affine warp: rotate about the pill's centre and move it to the crop's centre
    matrix = cv2.getRotationMatrix2D((cx, cy), where.angle, 1.0)
    matrix[:, 2] += np.array([width / 2 - cx, height / 2 - cy])
    crop = warp_affine(rgb, matrix, (width, height), border_mode=cv2.BORDER_REPLICATE)
    if not spec.mask_background or not where.outline:
        return crop
    return _paint_background(crop, where, matrix)


def enhance_imprint(pixels: np.ndarray, spec: CropSpec) -> np.ndarray:
    """``pixels`` (the resized crop, HWC uint8 RGB) with its lightness equalized locally
    (CLAHE, clip ``imprint_contrast``, 4x4 tiles); colour kept. Unchanged when off."""
    if not spec.imprint_contrast:
        return pixels
    lab = cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=spec.imprint_contrast, tileGridSize=(4, 4))
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _paint_background(crop: np.ndarray, where: Localization, matrix: np.ndarray) -> np.ndarray:
    """``crop`` with everything outside the pill's outline (grown by 1% of the pill's
    length and a pixel: the outline was found at the search resolution) painted
    ``FILL``."""
    points = np.asarray(where.outline, dtype=np.float64)
    moved = points @ matrix[:, :2].T + matrix[:, 2]
    mask: np.ndarray = np.zeros(crop.shape[:2], dtype=np.uint8)
    cv2.fillConvexPoly(mask, np.round(moved).astype(np.int32), 255, lineType=cv2.LINE_AA)
    grow = 1 + round(0.01 * where.size[0])
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    # inside the outline the crop, outside FILL; the blend only on the anti-aliased edge
    # (the same values as blending every pixel: alpha 1 and 0 are exact in float32).
    # cv2 fills and copies: np.where over an innermost axis of 3 was 20x slower (measured)
    out = np.empty_like(crop)
    cv2.rectangle(out, (0, 0), (out.shape[1], out.shape[0]), FILL, thickness=cv2.FILLED)
    cv2.copyTo(crop, cv2.inRange(mask, 255, 255), out)
    edge = (mask > 0) & (mask < 255)
    alpha = mask[edge].astype(np.float32)[:, None] / 255.0
    fill = np.asarray(FILL, dtype=np.float32)
    blended = crop[edge].astype(np.float32) * alpha + fill * (1.0 - alpha)
    out[edge] = blended.round().astype(np.uint8)
    return out
