"""Pill localization: find the one pill in a photo, its extent, outline and level angle.

Classical segmentation (OpenCV), no learned model and no assumption about the
background, the pill's size or its place in the frame:

1. the photo is shrunk to ``work_size`` px (long side) for the search;
2. the background colour is the median of a thin band along the frame's border, and each
   pixel's distance from it in CIELAB (perceptual) is thresholded by Otsu's method (never
   below ``min_contrast``: a plain tray is not a pill);
3. after an opening, a closing and filling the holes, the largest connected region is the
   pill candidate; its convex hull fills the imprint's gaps and its minimum-area rectangle
   gives its extent and its axis;
4. a pale pill on a pale surface may show only its imprint and its shadow at Otsu's
   threshold (several thin regions): lower thresholds are then tried, and the first whose
   largest region is solid (a pill is convex) is used; failing that, the region enclosed
   by the photo's strongest edges (a pill's outline shows even when its colour does not).

The result (``Localization``) gives the pill's centre, extent, outline and the angle that
levels it (its long axis, or a round pill's line of text); ``rxvision.data.pill_crop``
cuts the crop from it.

When no single pill is found the whole frame is used and the reason is said: ``empty``
(no region large enough), ``two_pills`` (a second region nearly as large as the first),
``cut`` (the region touches the frame's border), ``fills_frame`` (the region covers most
of the frame, e.g. a close-up already).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

LOCALIZED = "localized"
EMPTY = "empty"
TWO_PILLS = "two_pills"
CUT = "cut"
FILLS_FRAME = "fills_frame"
DISABLED = "disabled"
# the ImageNet mean colour: masked background normalizes to zero input
# lower thresholds tried (fractions of Otsu's) when Otsu's finds no solid region
RETRY_FRACTIONS = (1.0, 0.6, 0.35)
MIN_SOLIDITY = 0.85


@dataclass(frozen=True)
class CropSpec:
    """How the pill is found and cropped (part of a model's preprocessing contract)."""

    margin: float = 0.12
    orient: bool = True
    min_elongation: float = 1.15
    # round pills: level the imprint's own axis (its line of text) when it has one
    orient_imprint: bool = True
    min_imprint_elongation: float = 1.3
    work_size: int = 192
    min_contrast: float = 12.0
    min_area: float = 0.004
    max_area: float = 0.85
    second_ratio: float = 0.4
    border_band: float = 0.04
    # paint everything outside the pill's outline (pill_crop.FILL: no background cues)
    mask_background: bool = False
    # crop the levelled pill's own rectangle (the same margin on every side) instead of a
    # square: the square resize then stretches an elongated pill's short side, and its
    # imprint spans the model's whole height instead of a band across the middle
    stretch: bool = False
    # CLAHE on the crop's lightness (clip limit; 0: off): an imprint's strokes stand out
    # whatever the light and the pill's colour (an experiment: BENCHMARKS, issue 14)
    imprint_contrast: float = 0.0
    # a round pill's imprint axis is read inside its outline shrunk by this fraction of
    # its radius (0: 2 px only): a rim, a bevel or an outline is detail too, all round,
    # and hid the text's axis in most photos of drawn pills (BENCHMARKS, issue 14)
    imprint_inset: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the contract (``imprint_contrast`` and
        ``imprint_inset`` only when on: the contracts, and so the cache keys, of models
        made before them stay the same)."""
        data = asdict(self)
        for added in ("imprint_contrast", "imprint_inset"):
            if not data[added]:
                del data[added]
        return data


@dataclass(frozen=True)
class Localization:
    """Where the pill is, or why the whole frame is used."""

    status: str
    center: tuple[float, float] = (0.0, 0.0)  # full-resolution pixels (x, y)
    size: tuple[float, float] = (0.0, 0.0)  # the pill's long and short extent, pixels
    angle: float = 0.0  # degrees to rotate the photo by so that the long axis is level
    # the pill's convex outline, full-resolution pixels (x, y)
    outline: tuple[tuple[float, float], ...] = ()
    # whether ``angle`` levels the pill's own long axis (an elongated pill; else the
    # crop holds the pill upright or turned by its imprint, at any aspect)
    elongated: bool = False

    @property
    def found(self) -> bool:
        """Whether a single pill was found (else the whole frame is used)."""
        return self.status == LOCALIZED


def locate_pill(rgb: np.ndarray, spec: CropSpec) -> Localization:
    """Find the single pill of an RGB photo (HWC uint8)."""
    height, width = rgb.shape[:2]
    scale = spec.work_size / max(height, width)
    small = rgb
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    else:
        scale = 1.0
    distance, otsu = _distance_from_background(small, spec)
    first: Localization | None = None
    for fraction in RETRY_FRACTIONS:
        threshold = max(spec.min_contrast, otsu * fraction)
        # below Otsu's, surface texture joins in: a wider opening cuts its thin bridges
        opening = 3 if fraction == 1.0 else max(3, spec.work_size // 24)
        mask = _foreground(distance, threshold, opening)
        where = _locate_in_mask(small, mask, distance, spec, scale)
        if where.found:
            return where
        first = first or where
        if threshold <= spec.min_contrast:
            break
    where = _locate_in_mask(small, _edge_region(small, spec), distance, spec, scale)
    if where.found:
        return where
    assert first is not None
    return first


def _locate_in_mask(
    small: np.ndarray, mask: np.ndarray, distance: np.ndarray, spec: CropSpec, scale: float
) -> Localization:
    """The single solid pill region of a foreground mask, or why there is none."""
    # Grana's block-based labelling: the same labels as OpenCV's default (Spaghetti, also
    # block-based, so also numbered in the blocks' scan order), 2x faster here (measured)
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        mask, 8, cv2.CV_32S, cv2.CCL_GRANA
    )
    if count <= 1:
        return Localization(EMPTY)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1]
    frame = float(mask.shape[0] * mask.shape[1])
    largest = int(order[0]) + 1
    if areas[order[0]] < spec.min_area * frame:
        return Localization(EMPTY)
    if len(order) > 1 and areas[order[1]] >= spec.second_ratio * areas[order[0]]:
        return Localization(TWO_PILLS)
    x, y, w, h, area = (int(v) for v in stats[largest, :5])
    if x == 0 or y == 0 or x + w >= mask.shape[1] or y + h >= mask.shape[0]:
        return Localization(CUT)
    region = (labels[y : y + h, x : x + w] == largest).astype(np.uint8)
    # the hull of a region is the hull of its outer boundary's pixels (every pixel kept:
    # CHAIN_APPROX_NONE), which are far fewer than its pixels
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE, offset=(x, y))
    hull = _canonical_hull(cv2.convexHull(np.concatenate(contours)))
    hull_area = cv2.contourArea(hull)
    if hull_area > spec.max_area * frame:
        return Localization(FILLS_FRAME)
    if areas[order[0]] < MIN_SOLIDITY * hull_area:
        # thin pieces (an imprint, a shadow's rim): not a pill's body
        return Localization(TWO_PILLS if len(order) > 1 else EMPTY)
    if _surrounded_by_foreground(labels, largest, (x, y, w, h), distance, spec, area):
        # an imprint on a faint pill: the pill's body is around it, not the background
        return Localization(EMPTY)
    (cx, cy), (rw, rh), angle = cv2.minAreaRect(hull)
    long_side, short_side = max(rw, rh), max(1e-6, min(rw, rh))
    # minAreaRect's angle is that of the side it calls width: level the long side
    level = angle if rw >= rh else angle - 90.0
    elongated = spec.orient and long_side / short_side >= spec.min_elongation
    if not elongated:
        # no shape axis: the crop must hold the pill's upright bounding box (a square
        # turned 45 degrees is 1.41 times wider than its side)
        level = 0.0
        bx, by, bw, bh = cv2.boundingRect(hull)
        cx, cy = bx + bw / 2, by + bh / 2
        long_side, short_side = float(max(bw, bh)), float(min(bw, bh))
        imprint = imprint_angle(small, labels == largest, spec) if spec.orient else None
        if imprint is not None:
            # turned by the imprint's axis: the crop must hold the pill at any angle
            level = imprint
            radius = float(np.max(np.hypot(hull[:, 0, 0] - cx, hull[:, 0, 1] - cy)))
            long_side = short_side = 2 * radius
    outline = tuple(map(tuple, (hull[:, 0, :] / scale).tolist()))
    return Localization(
        LOCALIZED,
        center=(cx / scale, cy / scale),
        size=(long_side / scale, short_side / scale),
        angle=float(level),
        outline=outline,
        elongated=elongated,
    )


def _canonical_hull(hull: np.ndarray) -> np.ndarray:
    """``hull`` in the order ``cv2.convexHull`` gives for a region's pixels in row order
    (positive signed area, from the rightmost, lowest vertex): the painted outline's
    anti-aliased edge depends on where the polygon starts."""
    points = hull[:, 0, :]
    # the signed area of integer vertices is exact in float64
    if cv2.contourArea(points, oriented=True) < 0:
        points = points[::-1]
    start = int(np.lexsort((points[:, 1], points[:, 0]))[-1])
    return np.concatenate((points[start:], points[:start]))[:, None, :]


def _surrounded_by_foreground(
    labels: np.ndarray,
    label: int,
    box: tuple[int, int, int, int],
    distance: np.ndarray,
    spec: CropSpec,
    area: int,
) -> bool:
    """Whether a ring around region ``label`` (its bounding ``box``: x, y, w, h; ``area``
    pixels) is nearly all unlike the background (its 25th percentile: a pill's shadow can
    darken most of the ring on one side, never all)."""
    window, ring = ring_around(labels, label, box, area)
    near = distance[window][ring]
    return near.size > 0 and percentile_above(near, 25, spec.min_contrast)


def percentile_above(values: np.ndarray, q: float, threshold: float) -> bool:
    """``np.percentile(values, q) > threshold`` (linear interpolation), from the two
    order statistics around it: the interpolated value lies between them, so only when
    they straddle ``threshold`` is ``np.percentile`` itself needed (its overhead was a
    twentieth of a photo's localization)."""
    at = (values.size - 1) * (q / 100)
    low = math.floor(at)
    high = min(low + 1, values.size - 1)
    ordered = np.partition(values, (low, high))
    if float(ordered[low]) > threshold:
        return True
    if float(ordered[high]) <= threshold:
        return False
    return float(np.percentile(values, q)) > threshold


Window = tuple[slice, slice]


def ring_around(
    labels: np.ndarray, label: int, box: tuple[int, int, int, int], area: int
) -> tuple[Window, np.ndarray]:
    """The ring 2 px to 2 px + 12% of the square root of its ``area`` (pixels) around
    region ``label`` of ``labels``, as a window of the frame and the ring's mask inside it.

    Worked out in the bounding ``box`` (x, y, w, h) grown by the ring's width: the same
    ring as over the whole frame (nothing outside that window can join it), without
    dilating the whole frame."""
    x, y, w, h = box
    grow = max(3, round(0.12 * math.sqrt(area)))
    pad = grow + 3  # the ring's outer edge: 2 px, then the ellipse's radius
    window = (slice(max(0, y - pad), y + h + pad), slice(max(0, x - pad), x + w + pad))
    region = (labels[window] == label).astype(np.uint8)
    inner = cv2.dilate(region, np.ones((3, 3), np.uint8), iterations=2)
    outer = cv2.dilate(inner, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    return window, (outer > 0) & (inner == 0)


def imprint_angle(small: np.ndarray, pill: np.ndarray, spec: CropSpec) -> float | None:
    """Degrees to turn a pill by so that its imprint's main axis (a line of text, a score
    line) is level; None when the imprint has no clear axis (or there is none)."""
    if not spec.orient_imprint:
        return None
    kernel: np.ndarray = np.ones((5, 5), np.uint8)
    if spec.imprint_inset:
        radius = math.sqrt(float(pill.sum()) / math.pi)
        size = max(5, 2 * round(spec.imprint_inset * radius) + 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    inside = cv2.erode(pill.astype(np.uint8), kernel).astype(bool)
    if inside.sum() < 50:
        return None
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    detail = np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 2.0))
    values = detail[inside]
    ink = inside & (detail > max(4.0, float(np.percentile(values, 85))))
    ys, xs = np.nonzero(ink)
    if len(xs) < 20:
        return None
    eigenvalues, vectors = np.linalg.eigh(np.cov(np.stack([xs, ys]).astype(np.float64)))
    if eigenvalues[0] <= 0 or math.sqrt(eigenvalues[1] / eigenvalues[0]) < (
        spec.min_imprint_elongation
    ):
        return None
    vx, vy = vectors[:, 1]
    return float(math.degrees(math.atan2(vy, vx)))


def _distance_from_background(small: np.ndarray, spec: CropSpec) -> tuple[np.ndarray, float]:
    """Each pixel's CIELAB distance from the border's colour, and Otsu's threshold of it."""
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)
    h, w = lab.shape[:2]
    band = max(1, round(spec.border_band * min(h, w)))
    border = np.concatenate(
        [
            lab[:band].reshape(-1, 3),
            lab[-band:].reshape(-1, 3),
            lab[:, :band].reshape(-1, 3),
            lab[:, -band:].reshape(-1, 3),
        ]
    )
    background = _median_per_channel(border)
    # Every channel is an integer and the median a multiple of 0.5, so each squared
    # difference is a multiple of 0.25 below 2**16 and their sum is exact in float32 in
    # any order: a lookup table per channel and a channel sum give the same values as the
    # float arithmetic over every pixel, 3x faster (measured)
    table = (np.arange(256, dtype=np.float32)[:, None] - background) ** 2
    squared = cv2.LUT(lab, np.ascontiguousarray(table.reshape(256, 1, 3)))
    distance = cv2.transform(squared, np.ones((1, 3), dtype=np.float32))
    np.sqrt(distance, out=distance)
    distance = cv2.GaussianBlur(distance, (0, 0), 1.0)
    peak = max(1.0, float(distance.max()))
    # 0 <= distance <= peak, so the scaled values lie in [0, 256) (255 times 1 + a float32
    # rounding at most) and the cast's truncation alone gives what clipping to 255 did
    scaled = distance * np.float32(255.0 / peak)
    otsu, _ = cv2.threshold(scaled.astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return distance, float(otsu) * peak / 255.0


def _median_per_channel(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=0)`` of an (n, 3) uint8 array, as float32 (the mean of
    the two middle values when n is even), from one histogram instead of a sort."""
    n = values.shape[0]
    image = values.reshape(-1, 1, 3)
    # OpenCV's histogram counts (float32: exact below 2**24) are 4x faster than bincount
    counts = np.concatenate([cv2.calcHist([image], [c], None, [256], [0, 256]) for c in range(3)])
    cumulative = np.cumsum(counts.reshape(3, 256).astype(np.int64), axis=1)
    low = (cumulative <= (n - 1) // 2).sum(axis=1)
    high = (cumulative <= n // 2).sum(axis=1)
    return ((low.astype(np.float32) + high.astype(np.float32)) / np.float32(2)).astype(np.float32)


def _edge_region(small: np.ndarray, spec: CropSpec) -> np.ndarray:
    """What the strongest edges enclose (uint8 0/255): the CIELAB gradient's top 15%
    (never below ``min_contrast``), closed, holes filled, then opened to drop the
    surface's texture."""
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    gx = cv2.Sobel(lab, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(lab, cv2.CV_32F, 0, 1)
    magnitude = cv2.GaussianBlur(np.sqrt((gx**2 + gy**2).sum(axis=2)), (0, 0), 1.0)
    threshold = max(spec.min_contrast, float(np.percentile(magnitude, 85)))
    mask: np.ndarray = (magnitude > threshold).astype(np.uint8) * 255
    mask = cv2.morphologyEx(
        mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)), iterations=2
    )
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    mask = cv2.drawContours(mask, contours, -1, 255, thickness=cv2.FILLED)
    opening = max(3, spec.work_size // 21)
    return cv2.morphologyEx(
        mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (opening, opening))
    )


def _foreground(distance: np.ndarray, threshold: float, opening: int = 3) -> np.ndarray:
    """Pixels farther than ``threshold`` from the background, cleaned and holes filled,
    then opened by ``opening`` px (uint8 0/255)."""
    mask: np.ndarray = (distance > threshold).astype(np.uint8) * 255
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel, iterations=2)
    # the imprint inside a pill is a hole in its region: fill what the border cannot reach
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    mask = cv2.drawContours(mask, contours, -1, 255, thickness=cv2.FILLED)
    if opening > 3:
        wide = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (opening, opening))
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, wide)
    return mask
