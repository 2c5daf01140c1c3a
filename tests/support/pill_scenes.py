"""Pill photos drawn here with OpenCV primitives (not by rxvision.data.synth): textured
surfaces of several colours, five pill shapes at any angle, each with a dark imprint."""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image

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


def png(image: np.ndarray) -> bytes:
    """``image`` (HWC uint8 RGB) as PNG bytes: lossless, as a user's file would arrive."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()
