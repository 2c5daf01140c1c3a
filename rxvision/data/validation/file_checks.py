"""Per-file policy checks of an image that decoded: format, colour space (8-bit RGB),
resolution and EXIF orientation. Decoding itself, and the integrity checks that need it
(corruption, bombs, crashes, hangs), live in ``rxvision.data.decode``.
"""

from __future__ import annotations

from collections.abc import Iterator

from rxvision.data.decode import (
    EXIF_ORIENTATION,
    NOT_RGB,
    TOO_SMALL,
    UNSUPPORTED_FORMAT,
    FileFacts,
)
from rxvision.data.validation.policy import ValidationPolicy

MODE_NAMES = {
    "1": "1-bit black and white (1)",
    "L": "grayscale (L)",
    "LA": "grayscale with alpha (LA)",
    "P": "palette (P)",
    "PA": "palette with alpha (PA)",
    "RGBA": "RGB with an alpha channel (RGBA)",
    "RGBX": "RGB with padding (RGBX)",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "Lab",
    "HSV": "HSV",
    "I": "32-bit integer grayscale (I)",
    "F": "32-bit float grayscale (F)",
}


def content_issues(facts: FileFacts, policy: ValidationPolicy) -> Iterator[tuple[str, str]]:
    """Policy checks of a file that decoded: format, colour space, size, orientation."""
    if facts.format not in policy.formats:
        yield (
            UNSUPPORTED_FORMAT,
            f"format {facts.format} not accepted (accepted: {', '.join(policy.formats)})",
        )
    if facts.mode != "RGB":
        name = MODE_NAMES.get(facts.mode or "", f"mode {facts.mode}")
        if (facts.mode or "").startswith("I;16"):
            name = f"16-bit grayscale ({facts.mode})"
        yield NOT_RGB, f"colour space is {name}, not 8-bit RGB"
    elif facts.bits and facts.bits != 8:
        yield NOT_RGB, f"{facts.bits} bits per channel, not 8-bit RGB"
    width, height = facts.width or 0, facts.height or 0
    if width < policy.min_width or height < policy.min_height:
        yield (
            TOO_SMALL,
            f"{width}x{height} px, under the minimum {policy.min_width}x{policy.min_height}",
        )
    if facts.orientation not in (None, 1):
        yield (
            EXIF_ORIENTATION,
            f"EXIF orientation {facts.orientation}: stored pixels are rotated or mirrored "
            "relative to how viewers show them",
        )
