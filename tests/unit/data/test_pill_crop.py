"""The pill crop on pills drawn here (not by rxvision.data.synth): the painted-out
surface, the stretched rectangle, the imprint's contrast, the contract's pixels."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
from pill_scenes import BACKGROUNDS, draw_pill, png, scene

from rxvision.data.imaging import ImageSpec, load_image
from rxvision.data.localize import LOCALIZED, CropSpec, locate_pill
from rxvision.data.pill_crop import FILL, crop_pill

pytestmark = pytest.mark.unit


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
