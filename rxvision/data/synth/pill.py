"""One pill, drawn: its shape, shaded body and score line, and its imprint, debossed
into a tablet or inked on a capsule's halves with Pillow's bundled font.

Everything is drawn at ``SUPERSAMPLE`` times the photo's scale, then box-downsampled by
the photo (``photo``): antialiased edges and glyphs.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rxvision.data.synth.catalog import Product

# Long axis / short axis of each shape.
ASPECT = {
    "round": 1.0,
    "oval": 1.4,
    "oblong": 2.0,
    "capsule": 2.3,
    "diamond": 1.35,
    "hexagon": 1.0,
    "triangle": 1.0,
}
SUPERSAMPLE = 2  # draw at 2x, then box-downsample: antialiased edges and text


def pill_sprite(product: Product, side: str, rng: np.random.Generator, canvas: int) -> Image.Image:
    """The pill, long axis horizontal, on a transparent RGBA sprite."""
    aspect = ASPECT[product.shape]
    length = canvas * rng.uniform(0.6, 0.76) * (0.84 if aspect < 1.2 else 1.0)
    width = length / aspect
    pad = 4 * SUPERSAMPLE
    box = (pad, pad, pad + int(length), pad + int(width))
    sprite_size = (box[2] + pad, box[3] + pad)
    mask = Image.new("L", sprite_size, 0)
    _draw_shape(ImageDraw.Draw(mask), product.shape, box, 255)
    body = _shaded_body(product, mask, box, rng)
    draw = ImageDraw.Draw(body)
    _draw_shape(draw, product.shape, box, None, outline=_scale(product.colour, 0.72))
    lines = product.front if side == "front" else product.back
    if product.shape == "capsule":
        _print_capsule(draw, product, lines, box)
    else:
        if product.scored and side == "front":
            _draw_score(draw, product, box)
        _deboss(body, product, lines, box, split=product.scored and side == "front")
    body.putalpha(mask)
    return body


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    box: tuple[int, int, int, int],
    fill: int | None,
    outline: tuple[int, int, int] | None = None,
) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    line = 2 * SUPERSAMPLE if outline else 0
    if shape in ("round", "oval"):
        draw.ellipse(box, fill=fill, outline=outline, width=line)
    elif shape in ("oblong", "capsule"):
        draw.rounded_rectangle(box, radius=h // 2, fill=fill, outline=outline, width=line)
    else:
        draw.polygon(_polygon(shape, x0, y0, w, h), fill=fill, outline=outline, width=line)


def _polygon(shape: str, x0: int, y0: int, w: int, h: int) -> list[tuple[float, float]]:
    cx, cy = x0 + w / 2, y0 + h / 2
    if shape == "diamond":
        return [(x0, cy), (cx, y0), (x0 + w, cy), (cx, y0 + h)]
    if shape == "hexagon":
        return [
            (cx + w / 2 * math.cos(a), cy + h / 2 * math.sin(a))
            for a in (math.pi / 3 * k for k in range(6))
        ]
    # triangle, rounded by its own antialiasing
    return [(x0, y0 + h * 0.93), (cx, y0), (x0 + w, y0 + h * 0.93)]


def _shaded_body(
    product: Product, mask: Image.Image, box: tuple[int, int, int, int], rng: np.random.Generator
) -> Image.Image:
    """Fill colour(s) with a soft highlight, so the pill reads as a 3-D object."""
    w, h = mask.size
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    rx, ry = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    lx, ly = rng.uniform(-0.4, 0.4, size=2)
    xs = (np.arange(w, dtype=np.float32) - cx) / rx - lx
    ys = (np.arange(h, dtype=np.float32) - cy) / ry - ly
    r2 = xs[None, :] ** 2 + ys[:, None] ** 2
    shade = np.clip(1.08 - 0.16 * r2, 0.78, 1.1)[..., None]
    colour = np.empty((1, w, 3), dtype=np.float32)
    colour[:] = product.colour
    if product.colour2 is not None:
        colour[:, : int(cx)] = product.colour2
    body = np.clip(colour * shade, 0, 255).astype(np.uint8)
    return Image.fromarray(body, "RGB").convert("RGBA")


def _draw_score(
    draw: ImageDraw.ImageDraw, product: Product, box: tuple[int, int, int, int]
) -> None:
    cx = (box[0] + box[2]) // 2
    inset = (box[3] - box[1]) // 10
    draw.line(
        [(cx, box[1] + inset), (cx, box[3] - inset)],
        fill=_scale(product.colour, 0.6),
        width=2 * SUPERSAMPLE,
    )


def _deboss(
    body: Image.Image,
    product: Product,
    lines: tuple[str, ...],
    box: tuple[int, int, int, int],
    *,
    split: bool,
) -> None:
    """Press the imprint into the tablet: dark glyphs with a light lower-right rim."""
    if not lines:
        return
    text = _text_mask(body.size, lines, box, shape=product.shape, split=split)
    rim = Image.new("L", body.size, 0)
    rim.paste(text, (SUPERSAMPLE, SUPERSAMPLE))
    dark = _scale(product.colour, 0.4) if sum(product.colour) > 240 else _scale(product.colour, 1.7)
    body.paste(_scale(product.colour, 1.15), (0, 0), rim)
    body.paste(dark, (0, 0), text)


def _print_capsule(
    draw: ImageDraw.ImageDraw,
    product: Product,
    lines: tuple[str, ...],
    box: tuple[int, int, int, int],
) -> None:
    """Ink the imprint, one token on each half of the capsule."""
    if not lines:
        return
    x0, y0, x1, y1 = box
    halves = [(x0, y0, (x0 + x1) // 2, y1), ((x0 + x1) // 2, y0, x1, y1)]
    tokens = lines if len(lines) == 2 else (lines[0], lines[0])
    colours = (product.colour2 or product.colour, product.colour)
    for token, half, under in zip(tokens, halves, colours, strict=True):
        ink = (20, 20, 24) if sum(under) > 380 else (240, 240, 236)
        font = _fit_font((token,), half[2] - half[0], half[3] - half[1], fill=0.62)
        centre = ((half[0] + half[2]) / 2, (half[1] + half[3]) / 2)
        draw.text(centre, token, fill=ink, font=font, anchor="mm", stroke_width=SUPERSAMPLE // 2)


def _text_mask(
    size: tuple[int, int],
    lines: tuple[str, ...],
    box: tuple[int, int, int, int],
    *,
    shape: str,
    split: bool,
) -> Image.Image:
    """An L mask of the imprint, as large as fits the pill's face."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    stroke = SUPERSAMPLE  # 1 px after downsampling: bold enough to read at 112 px
    if split and len(lines) == 2:
        # one token on each side of the score line
        font = _fit_font(lines, w * 0.42, h * 0.55, fill=1.0)
        for token, cx in zip(lines, (x0 + w * 0.27, x0 + w * 0.73), strict=True):
            draw.text(
                (cx, y0 + h / 2), token, fill=255, font=font, anchor="mm", stroke_width=stroke
            )
        return mask
    if w / h > 1.5:  # long pill: one line
        line = " ".join(lines)
        font = _fit_font((line,), w * 0.72, h * 0.56, fill=1.0)
        draw.text(
            (x0 + w / 2, y0 + h / 2), line, fill=255, font=font, anchor="mm", stroke_width=stroke
        )
        return mask
    # round-ish pill: stacked lines, the last (the strength, what tells a pair apart) the
    # largest; a triangle's face is narrow at the top, so lower and smaller
    narrow = shape == "triangle"
    width = w * (0.42 if narrow else 0.66)
    if len(lines) == 1:
        font = _fit_font(lines, width, h * (0.36 if narrow else 0.5), fill=1.0)
        rows = [(lines[0], font, y0 + h * (0.64 if narrow else 0.52))]
    else:
        small = _fit_font(lines[:-1], width, h * (0.2 if narrow else 0.24), fill=1.0)
        large = _fit_font(lines[-1:], width, h * (0.3 if narrow else 0.4), fill=1.0)
        rows = [
            (lines[0], small, y0 + h * (0.5 if narrow else 0.3)),
            (lines[-1], large, y0 + h * (0.72 if narrow else 0.64)),
        ]
    for text, font, y in rows:
        draw.text((x0 + w / 2, y), text, fill=255, font=font, anchor="mm", stroke_width=stroke)
    return mask


def _fit_font(
    lines: tuple[str, ...], max_width: float, max_height: float, *, fill: float
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The largest font whose widest line fits ``max_width`` and its height ``max_height``."""
    px = max(6, int(max_height * fill))
    font = _font(px)
    widest = max(font.getlength(line) for line in lines)
    if widest > max_width:
        font = _font(max(6, int(px * max_width / widest)))
    return font


@lru_cache(maxsize=256)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font: the same glyphs on every machine, no system fonts needed.
    return ImageFont.load_default(size=px)


def _scale(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    r, g, b = (min(255, int(c * factor)) for c in colour)
    return (r, g, b)
