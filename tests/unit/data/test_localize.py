"""Pill localization on pills drawn here (not by rxvision.data.synth): every shape, dark,
light and tinted backgrounds, any rotation, and each fallback."""

from __future__ import annotations

import hashlib
import io
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from rxvision.data.imaging import ImageSpec, load_image, load_image_located
from rxvision.data.localize import (
    CUT,
    EMPTY,
    FILL,
    LOCALIZED,
    TWO_PILLS,
    CropSpec,
    crop_pill,
    locate_pill,
)

pytestmark = pytest.mark.unit

SIZE = 320
BACKGROUNDS = {
    "dark": (25, 25, 30),
    "light": (235, 235, 228),
    "tinted": (60, 110, 170),
    "wood": (140, 100, 70),
}
PILL = (230, 200, 80)


def scene(background: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A surface with gentle texture and a light gradient (no two pixels alike)."""
    rng = np.random.default_rng(seed)
    base = np.empty((SIZE, SIZE, 3), np.float32)
    base[:] = background
    ramp = np.linspace(0.92, 1.06, SIZE, dtype=np.float32)[None, :, None]
    noise = rng.normal(0, 3, size=(SIZE, SIZE, 1)).astype(np.float32)
    return np.clip(base * ramp + noise, 0, 255).astype(np.uint8)


def draw_pill(
    image: np.ndarray,
    shape: str,
    center: tuple[int, int],
    length: int,
    angle: float,
    colour: tuple[int, int, int] = PILL,
) -> None:
    """A filled pill (cv2 primitives), long axis at ``angle`` degrees, with a dark mark."""
    aspect = {"round": 1.0, "oval": 1.5, "capsule": 2.4, "triangle": 1.0, "square": 1.0}[shape]
    half_l, half_w = length / 2, length / (2 * aspect)
    if shape in ("round", "oval"):
        cv2.ellipse(image, center, (int(half_l), int(half_w)), angle, 0, 360, colour, -1)
    else:
        if shape == "triangle":
            corners = [(-half_l, half_w), (0, -half_w), (half_l, half_w)]
        else:  # capsule as a rectangle with round ends, square as itself
            corners = [(-half_l, -half_w), (half_l, -half_w), (half_l, half_w), (-half_l, half_w)]
        theta = math.radians(angle)
        points = np.array(
            [
                (
                    center[0] + x * math.cos(theta) - y * math.sin(theta),
                    center[1] + x * math.sin(theta) + y * math.cos(theta),
                )
                for x, y in corners
            ],
            np.int32,
        )
        cv2.fillPoly(image, [points], colour)
        if shape == "capsule":
            for sign in (-1, 1):
                end = (
                    int(center[0] + sign * (half_l - half_w) * math.cos(theta)),
                    int(center[1] + sign * (half_l - half_w) * math.sin(theta)),
                )
                cv2.circle(image, end, int(half_w), colour, -1)
    cv2.putText(
        image, "A7", (center[0] - 12, center[1] + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 40, 40), 2
    )


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


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


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


@pytest.mark.parametrize("background", ["dark", "tinted"])
def test_mask_background_paints_everything_outside_the_pill(background: str) -> None:
    image = scene(BACKGROUNDS[background])
    draw_pill(image, "oval", (150, 170), 120, angle=20, colour=(250, 250, 245))
    spec = CropSpec(mask_background=True)
    where = locate_pill(image, spec)
    crop = crop_pill(image, where, spec)
    plain = crop_pill(image, where, CropSpec())
    corners = [crop[:6, :6], crop[:6, -6:], crop[-6:, :6], crop[-6:, -6:]]
    assert all(np.array_equal(c, np.broadcast_to(FILL, c.shape)) for c in corners)
    # the pill itself is untouched
    middle = (slice(crop.shape[0] // 2 - 5, crop.shape[0] // 2 + 5),) * 2
    assert np.array_equal(crop[middle], plain[middle])
    # the same crop when the pill lies on another surface: no background cue remains
    other = scene(BACKGROUNDS["wood"])
    draw_pill(other, "oval", (150, 170), 120, angle=20, colour=(250, 250, 245))
    again = crop_pill(other, locate_pill(other, spec), spec)
    assert again.shape == crop.shape
    assert np.abs(again.astype(int) - crop.astype(int)).mean() < 4


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


# the crops of the scenes below, hashed; computed when the contract was at IMAGE_SPEC_VERSION
# 2. A change of localization that moves a single pixel of a crop must bump that version
# (models and feature sets made before are then refused, not fed other pixels).
CONTRACT_PIXELS = "90f8c5e11da115c886f015def855ef3d94b772383609f00c0ae0fadd52bd3292"


def test_the_crops_are_pinned_to_the_contract_version() -> None:
    from rxvision.data.imaging import IMAGE_SPEC_VERSION

    spec = CropSpec(mask_background=True)
    digest = hashlib.sha256()
    for i, (shape, background) in enumerate(
        (s, b) for s in ("round", "oval", "capsule", "triangle", "square") for b in BACKGROUNDS
    ):
        image = scene(BACKGROUNDS[background], seed=i)
        draw_pill(image, shape, (140 + 3 * i, 170 - 2 * i), 90 + 2 * i, 17.0 * i)
        where = locate_pill(image, spec)
        assert where.status == LOCALIZED, (shape, background)
        digest.update(crop_pill(image, where, spec).tobytes())
    assert (IMAGE_SPEC_VERSION, digest.hexdigest()) == (2, CONTRACT_PIXELS)


def _pill_extent(pixels: np.ndarray) -> tuple[int, int]:
    """Width and height (px) of what differs from the crop's corner colour."""
    lab = cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB).astype(np.float32)
    pill = np.linalg.norm(lab - lab[1, 1], axis=2) > 30
    rows, cols = np.flatnonzero(pill.any(axis=1)), np.flatnonzero(pill.any(axis=0))
    return int(cols[-1] - cols[0]), int(rows[-1] - rows[0])


@pytest.mark.parametrize("angle", [0, 35, 120])
def test_stretch_crops_an_elongated_pill_to_its_own_rectangle(angle: float) -> None:
    image = scene(BACKGROUNDS["tinted"])
    draw_pill(image, "capsule", (160, 160), 150, angle=angle)
    square, stretched = CropSpec(margin=0.1), CropSpec(margin=0.1, stretch=True)
    where = locate_pill(image, stretched)
    assert where.status == LOCALIZED and where.elongated
    crop = crop_pill(image, where, stretched)
    # the rectangle: the long side and the short side, each with 10% of the long side
    long_side, short_side = where.size
    assert crop.shape[1] == round(long_side * 1.2)
    assert crop.shape[0] == round(short_side + 0.2 * long_side)
    # the model input: at 96 px the capsule (2.4:1) spans ~2/3 of the height, not ~1/3
    spec = ImageSpec(96, crop=stretched)
    pixels = load_image(png(image), spec)
    _, tall = _pill_extent(pixels)
    _, flat = _pill_extent(load_image(png(image), ImageSpec(96, crop=square)))
    assert tall > 0.6 * 96 and tall > 1.8 * flat


def test_stretch_leaves_a_round_pill_square() -> None:
    image = scene(BACKGROUNDS["dark"])
    draw_pill(image, "round", (150, 150), 120, angle=0, colour=(250, 250, 245))
    where = locate_pill(image, CropSpec(stretch=True))
    assert where.status == LOCALIZED and not where.elongated
    assert np.array_equal(
        crop_pill(image, where, CropSpec(stretch=True)), crop_pill(image, where, CropSpec())
    )


def _imprint_contrast(pixels: np.ndarray, glyph: np.ndarray, body: np.ndarray) -> float:
    """Lightness difference (CIELAB L) between a glyph's strokes and the pill around it."""
    lightness = cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    return float(lightness[body].mean() - lightness[glyph].mean())


def test_imprint_contrast_makes_a_faint_imprint_stand_out_and_keeps_the_colour() -> None:
    image = scene(BACKGROUNDS["wood"])
    cv2.ellipse(image, (160, 160), (80, 80), 0, 0, 360, (200, 170, 90), -1)
    # a faint debossed imprint: a few levels darker than the pill's body
    cv2.putText(image, "M8", (118, 182), cv2.FONT_HERSHEY_SIMPLEX, 1.8, (180, 152, 80), 5)
    plain = load_image(png(image), ImageSpec(96, crop=CropSpec(mask_background=True)))
    spec = ImageSpec(96, crop=CropSpec(mask_background=True, imprint_contrast=2.0))
    enhanced = load_image(png(image), spec)
    # where the strokes and the body are, from the plain crop (same geometry)
    lab = cv2.cvtColor(plain, cv2.COLOR_RGB2LAB).astype(np.float32)
    pill = np.linalg.norm(lab[..., 1:] - lab[48, 48, 1:], axis=2) < 12
    inner = cv2.erode(pill.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    level = np.median(lab[..., 0][inner])
    glyph = inner & (lab[..., 0] < level - 6)
    body = inner & (lab[..., 0] > level - 2)
    assert glyph.sum() > 40 and body.sum() > 400
    before = _imprint_contrast(plain, glyph, body)
    after = _imprint_contrast(enhanced, glyph, body)
    assert after > 1.5 * before
    # the pill's colour (CIELAB a, b) stays within a few levels
    chroma = cv2.cvtColor(enhanced, cv2.COLOR_RGB2LAB).astype(np.float32)[..., 1:]
    assert np.abs(chroma[body].mean(axis=0) - lab[..., 1:][body].mean(axis=0)).max() < 4


def test_imprint_options_off_leave_the_contract_and_its_hash_as_before() -> None:
    off = ImageSpec(96, crop=CropSpec(mask_background=True))
    assert "imprint_contrast" not in off.to_dict()["crop"]
    on = ImageSpec(96, crop=CropSpec(mask_background=True, imprint_contrast=2.0))
    assert on.to_dict()["crop"]["imprint_contrast"] == 2.0
    assert on.config_hash() != off.config_hash()
    assert "imprint_inset" not in off.to_dict()["crop"]
    inset = ImageSpec(96, crop=CropSpec(mask_background=True, imprint_inset=0.15))
    assert inset.to_dict()["crop"]["imprint_inset"] == 0.15
    assert inset.config_hash() not in (on.config_hash(), off.config_hash())
    for spec in (off, on, inset):
        assert ImageSpec.from_dict(spec.to_dict(), source="model") == spec


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
    window, ring = ring_around(labels, 3, box)
    assert ring.any()
    placed = np.zeros_like(expected)
    placed[window] = ring
    np.testing.assert_array_equal(placed, expected)
