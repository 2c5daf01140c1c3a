"""Pill localization on pills drawn here (not by rxvision.data.synth): every shape, dark,
light and tinted backgrounds, any rotation, and each fallback."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from pill_scenes import BACKGROUNDS, PILL, SIZE, draw_pill, png, scene

from rxvision.data.imaging import ImageSpec, load_image, load_image_located
from rxvision.data.localize import CUT, EMPTY, LOCALIZED, TWO_PILLS, CropSpec, locate_pill
from rxvision.data.pill_crop import crop_pill

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("shape", ["round", "oval", "capsule", "triangle", "square"])
@pytest.mark.parametrize("background", sorted(BACKGROUNDS))
def test_each_shape_is_found_on_each_background(shape: str, background: str) -> None:
    image = scene(BACKGROUNDS[background])
    colour = (250, 250, 245) if background == "dark" else PILL
    draw_pill(image, shape, (140, 170), 110, angle=30, colour=colour)
    where = locate_pill(image, CropSpec())
    assert where.status == LOCALIZED
    assert 85 < where.size[0] < 160  # a square turned 30 degrees: 150 px upright
    # every pixel of the pill lies inside the square crop around what was found
    drawn = np.zeros_like(image)
    draw_pill(drawn, shape, (140, 170), 110, angle=30, colour=(255, 255, 255))
    ys, xs = np.nonzero(drawn[..., 0] == 255)
    reach = where.size[0] * (0.5 + CropSpec().margin)
    if where.angle == 0:  # an upright crop: the pill's bounding box is inside it
        assert np.abs(xs - where.center[0]).max() <= reach + 1
        assert np.abs(ys - where.center[1]).max() <= reach + 1
    else:  # a levelled crop: within its half-diagonal
        assert np.hypot(xs - where.center[0], ys - where.center[1]).max() <= reach * 1.42


@pytest.mark.parametrize("angle", [0, 35, 90, 137, 200, 300])
def test_elongated_pills_are_levelled_whatever_their_rotation(angle: float) -> None:
    image = scene(BACKGROUNDS["tinted"])
    draw_pill(image, "capsule", (160, 160), 150, angle=angle)
    spec = CropSpec(margin=0.1)
    where = locate_pill(image, spec)
    assert where.status == LOCALIZED
    crop = crop_pill(image, where, spec)
    # levelled: the pill spans the crop's width and about 1/2.4 of its height
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    pill = np.linalg.norm(lab - lab[1, 1], axis=2) > 30
    rows, cols = np.flatnonzero(pill.any(axis=1)), np.flatnonzero(pill.any(axis=0))
    width, height = cols[-1] - cols[0], rows[-1] - rows[0]
    assert width > 1.8 * height
    assert width > 0.75 * crop.shape[1]


def test_round_pills_without_an_imprint_axis_are_not_rotated() -> None:
    image = scene(BACKGROUNDS["light"])
    cv2.circle(image, (150, 150), 60, (200, 80, 80), -1)  # a blank round pill
    assert locate_pill(image, CropSpec()).angle == 0.0
    draw_pill(image, "round", (150, 150), 120, angle=0)  # now with a mark
    assert locate_pill(image, CropSpec(orient_imprint=False)).angle == 0.0


def test_an_empty_tray_falls_back_to_the_whole_frame() -> None:
    image = scene(BACKGROUNDS["wood"])
    assert locate_pill(image, CropSpec()).status == EMPTY
    spec = ImageSpec(img_size=64, crop=CropSpec())
    pixels, status = load_image_located(png(image), spec)
    assert status == EMPTY
    # the whole frame, resized as without a crop
    assert np.array_equal(pixels, load_image(png(image), ImageSpec(img_size=64)))


def test_two_pills_fall_back() -> None:
    image = scene(BACKGROUNDS["dark"])
    draw_pill(image, "round", (90, 160), 90, 0, colour=(240, 240, 240))
    draw_pill(image, "oval", (230, 160), 100, 45, colour=(240, 240, 240))
    assert locate_pill(image, CropSpec()).status == TWO_PILLS


def test_a_pill_cut_by_the_border_falls_back() -> None:
    image = scene(BACKGROUNDS["light"])
    draw_pill(image, "oval", (20, 160), 140, 0, colour=(200, 60, 60))
    assert locate_pill(image, CropSpec()).status == CUT


def test_the_crop_zooms_on_a_small_pill_through_load_image() -> None:
    # a pill of a tenth of the frame becomes most of the model's input
    image = scene(BACKGROUNDS["tinted"])
    draw_pill(image, "round", (200, 90), 40, 0, colour=(250, 240, 230))
    pixels, status = load_image_located(png(image), ImageSpec(img_size=64, crop=CropSpec()))
    assert status == LOCALIZED and pixels.shape == (64, 64, 3)
    bright = (pixels.astype(int).sum(axis=2) > 600).mean()
    assert bright > 0.3  # the pill fills the crop (about 1% of the frame before)


@pytest.mark.parametrize("angle", [0, 30, 75, 120, 160])
def test_a_round_pill_is_levelled_by_its_imprint(angle: float) -> None:
    # a round pill has no up; the line of text on it has an axis
    image = scene(BACKGROUNDS["tinted"])
    cv2.circle(image, (160, 160), 70, (245, 245, 240), -1)
    text = np.zeros((SIZE, SIZE), np.uint8)
    cv2.putText(text, "AB 12", (104, 172), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 3)
    turn = cv2.getRotationMatrix2D((160, 160), angle, 1.0)
    text = cv2.warpAffine(text, turn, (SIZE, SIZE))
    image[text > 127] = (40, 40, 40)
    spec = CropSpec()
    where = locate_pill(image, spec)
    assert where.status == LOCALIZED
    crop = crop_pill(image, where, spec)
    ys, xs = np.nonzero(crop.sum(axis=2) < 200)  # the dark glyphs
    spread_x, spread_y = np.ptp(xs), np.ptp(ys)
    assert spread_x > 2.5 * spread_y  # the text line is level (either way up)


def _outlined_round_pill(angle: float) -> np.ndarray:
    """A round pill with a dark rim (an outline, a bevel's shade) and a line of text."""
    image = scene(BACKGROUNDS["tinted"])
    cv2.circle(image, (160, 160), 70, (245, 245, 240), -1)
    cv2.circle(image, (160, 160), 70, (30, 30, 30), 4, lineType=cv2.LINE_AA)
    text = np.zeros((SIZE, SIZE), np.uint8)
    cv2.putText(text, "M8", (128, 176), cv2.FONT_HERSHEY_SIMPLEX, 1.3, 255, 4)
    text = cv2.warpAffine(text, cv2.getRotationMatrix2D((160, 160), angle, 1.0), (SIZE, SIZE))
    image[text > 127] = (40, 40, 40)
    return image


def _text_is_level(image: np.ndarray, spec: CropSpec) -> bool:
    where = locate_pill(image, spec)
    assert where.status == LOCALIZED
    crop = crop_pill(image, where, spec)
    inside = np.zeros(crop.shape[:2], np.uint8)
    centre = (crop.shape[1] // 2, crop.shape[0] // 2)
    cv2.circle(inside, centre, round(0.3 * crop.shape[0]), 1, -1)  # the text, not the rim
    ys, xs = np.nonzero((crop.sum(axis=2) < 200) & (inside > 0))
    return bool(np.ptp(xs) > 1.5 * np.ptp(ys))


@pytest.mark.parametrize("angle", [35, 70, 110])
def test_a_rimmed_round_pill_is_levelled_by_its_imprint_inside_the_rim(angle: float) -> None:
    image = _outlined_round_pill(angle)
    # the rim's detail, all round, hides the text's axis when read up to the outline
    assert not _text_is_level(image, CropSpec())
    assert _text_is_level(image, CropSpec(imprint_inset=0.15))


def test_a_pale_pill_on_a_pale_surface_is_found_whole() -> None:
    # at Otsu's threshold only the dark imprint stands out, and it lies on something unlike
    # the background (the pill's body): lower thresholds find the body
    image = scene((215, 215, 208))
    shadow = image.copy()
    cv2.circle(shadow, (172, 174), 72, (140, 140, 136), -1)
    image[:] = cv2.addWeighted(image, 0.4, cv2.GaussianBlur(shadow, (0, 0), 4), 0.6, 0)
    cv2.circle(image, (160, 160), 70, (238, 237, 232), -1)
    cv2.putText(image, "23", (125, 178), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (60, 60, 60), 4)
    where = locate_pill(image, CropSpec())
    assert where.status == LOCALIZED
    assert 130 < where.size[0] < 175  # the body (140 px, its shadow a little), not the digits
    assert math.hypot(where.center[0] - 163, where.center[1] - 163) < 12


def test_a_pill_the_colour_of_its_surface_is_found_by_its_outline() -> None:
    # the body differs from the surface by less than min_contrast and its rim is drawn on
    # one side only: no threshold finds a solid region; the edges enclose the pill
    image = scene((214, 214, 208))
    cv2.circle(image, (165, 150), 70, (226, 226, 221), -1)
    cv2.ellipse(image, (165, 150), (70, 70), 0, 200, 340, (150, 150, 146), 2)
    cv2.putText(image, "23", (130, 168), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (70, 70, 70), 4)
    where = locate_pill(image, CropSpec())
    assert where.status == LOCALIZED
    assert 130 < where.size[0] < 165
    assert math.hypot(where.center[0] - 165, where.center[1] - 150) < 8


@pytest.mark.parametrize("background", sorted(BACKGROUNDS))
def test_background_distance_equals_the_float_arithmetic(background: str) -> None:
    # the distance is computed from lookup tables: it must be the float32 arithmetic's
    # values bit for bit (the crops, and so every stored contract, depend on them)
    from rxvision.data.localize import _distance_from_background

    image = scene(BACKGROUNDS[background], seed=3)
    draw_pill(image, "oval", (150, 160), 100, 30.0)
    spec = CropSpec()
    for size in (192, 151, 64):
        small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
        band = max(1, round(spec.border_band * size))
        border = np.concatenate(
            [lab[:band], lab[-band:], lab[:, :band].swapaxes(0, 1), lab[:, -band:].swapaxes(0, 1)],
            axis=None,
        ).reshape(-1, 3)
        expected = np.linalg.norm(lab - np.median(border, axis=0), axis=2)
        expected = cv2.GaussianBlur(expected, (0, 0), 1.0)
        distance, _ = _distance_from_background(small, spec)
        assert distance.dtype == np.float32
        np.testing.assert_array_equal(distance, expected)


@pytest.mark.parametrize("corner", [(60, 70), (2, 3), (150, 140), (0, 100)])
def test_the_ring_around_a_region_is_the_whole_frames_ring(corner: tuple[int, int]) -> None:
    # the ring is dilated inside a window around the region only: it must be exactly the
    # ring a dilation of the whole frame gives, also where the window meets the border
    from rxvision.data.localize import ring_around

    labels = np.zeros((192, 192), np.int32)
    x, y = corner
    cv2.ellipse(labels, (x + 20, y + 15), (20, 14), 30, 0, 360, 3, -1)
    ys, xs = np.nonzero(labels == 3)
    box = (int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
    region = (labels == 3).astype(np.uint8)
    grow = max(3, round(0.12 * math.sqrt(float(region.sum()))))
    inner = cv2.dilate(region, np.ones((3, 3), np.uint8), iterations=2)
    outer = cv2.dilate(inner, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    expected = (outer > 0) & (inner == 0)
    window, ring = ring_around(labels, 3, box, int(region.sum()))
    assert ring.any()
    placed = np.zeros_like(expected)
    placed[window] = ring
    np.testing.assert_array_equal(placed, expected)


@pytest.mark.parametrize("q", [25, 50, 85])
def test_percentile_above_answers_as_numpys_percentile(q: float) -> None:
    # the shortcut reads two order statistics: it must agree with np.percentile on every
    # threshold, at the values themselves (ties) and between them
    from rxvision.data.localize import percentile_above

    rng = np.random.default_rng(q)
    for size in (1, 2, 3, 7, 40, 401):
        values = (rng.integers(0, 60, size) * 0.5 + rng.random(size) * (size % 2)).astype(
            np.float32
        )
        expected_at = float(np.percentile(values, q))
        thresholds = [*values.tolist(), expected_at, expected_at - 1e-4, -1.0, 100.0]
        for threshold in thresholds:
            assert percentile_above(values.copy(), q, threshold) == (expected_at > threshold)


@pytest.mark.parametrize("count", [1, 2, 767, 768])
def test_the_borders_median_is_numpys_median(count: int) -> None:
    from rxvision.data.localize import _median_per_channel

    values = np.random.default_rng(count).integers(0, 256, (count, 3)).astype(np.uint8)
    got = _median_per_channel(values)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.median(values, axis=0).astype(np.float32))
