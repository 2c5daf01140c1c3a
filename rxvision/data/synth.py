"""Synthetic pill photographs in ImageFolder layout, for demos, tests and benchmarks.

``generate_dataset`` draws ``classes`` drug products, ``per_class`` photographs each, into
``OUT/<product>/img-NNNNN.jpg`` and writes ``OUT/manifest.parquet``. A product is a
drug product with an NDC-like code in its folder name, e.g.
``ndc-17919-0011-zanex-10mg``: labeler code, product code, drug name, strength.

Products differ by shape, colour, imprint and score line. Products come in look-alike
pairs (the same drug in two strengths): same shape and colour, different imprint on both
sides, so a classifier has to read the imprint. Photographs vary by rotation, position,
scale, background, lighting, shadow, blur, noise, JPEG quality and side (front or back).

The product catalog depends only on the class index, so two seeds give two independent
photo sets of the same products (e.g. a train set and a fresh hold-out set). Each image
draws from its own RNG seeded by ``(seed, class, index)``: the same seed gives
byte-identical files whatever the number of workers (with the same Pillow and numpy).

``defects=True`` plants bad files for demos of the validator; the manifest's ``defect``
column names the validator reason code each one should get.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from hashlib import sha256
from io import BytesIO
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from rxvision.errors import ConfigError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.parquet"
MANIFEST_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("label", pa.string()),
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("side", pa.string()),
        ("defect", pa.string()),
    ]
)

# Planted defects: the validator reason code each one must get (see docs/data-validation.md).
DEFECT_CORRUPT = "corrupt"
DEFECT_EMPTY = "empty_file"
DEFECT_GRAYSCALE = "not_rgb"
DEFECT_TOO_SMALL = "too_small"
DEFECT_DUPLICATE = "label_conflict"

SHAPES = ("round", "oval", "oblong", "capsule", "diamond", "hexagon", "triangle")
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
COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("white", (236, 234, 226)),
    ("yellow", (236, 204, 88)),
    ("orange", (230, 138, 58)),
    ("pink", (232, 160, 182)),
    ("lightblue", (150, 192, 232)),
    ("blue", (58, 98, 188)),
    ("green", (98, 170, 108)),
    ("red", (188, 58, 52)),
    ("brown", (150, 100, 60)),
    ("purple", (140, 100, 182)),
    ("peach", (242, 192, 150)),
    ("grey", (166, 166, 172)),
)
BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (62, 104, 158),  # blue counting tray
    (40, 130, 120),  # teal counting tray
    (232, 232, 226),  # paper
    (128, 128, 130),  # grey bench
    (38, 38, 44),  # dark mat
    (200, 184, 158),  # beige
    (138, 98, 66),  # wood
    (90, 150, 90),  # green cutting mat
)
DRUG_PREFIXES = ("zan", "cor", "lum", "vex", "tri", "ful", "mor", "dal", "sen", "pra", "qui", "ber")
DRUG_SUFFIXES = ("ex", "tor", "ima", "olin", "avir", "azol", "ipen", "etra")
STRENGTH_PAIRS = ((5, 10), (10, 20), (20, 40), (25, 50), (50, 100), (100, 200), (250, 500))
# "field" photographs: surfaces the "studio" set never shows, stronger colour casts and
# blur (a hold-out from other conditions than the training photos)
FIELD_BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (170, 60, 60),  # red tray
    (236, 210, 120),  # yellow paper
    (70, 70, 110),  # navy cloth
    (180, 200, 210),  # steel
    (110, 80, 120),  # plum mat
    (20, 20, 20),  # black glass
)
CONDITIONS = ("studio", "field")
BACK_PROBABILITY = 0.4
SUPERSAMPLE = 2  # draw at 2x, then box-downsample: antialiased edges and text


@dataclass(frozen=True)
class Product:
    """One drug product: what its pills look like and its folder name."""

    index: int
    label: str
    shape: str
    colour: tuple[int, int, int]
    colour2: tuple[int, int, int] | None  # the capsule's second half
    front: tuple[str, ...]  # imprint lines (or halves across a score line)
    back: tuple[str, ...]  # empty: blank back
    scored: bool


@dataclass(frozen=True)
class PlantedDefect:
    """A bad file planted by ``defects=True`` and the reason code the validator must give."""

    path: str
    code: str


@dataclass(frozen=True)
class SynthResult:
    """What ``generate_dataset`` wrote."""

    out: Path
    manifest: Path
    labels: tuple[str, ...]
    images: int
    defects: tuple[PlantedDefect, ...]
    imbalanced_label: str | None
    seconds: float
    workers: int

    @property
    def images_per_second(self) -> float:
        """Files written per second of wall time."""
        return self.images / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class _Job:
    product: Product
    index: int
    seed: int
    size: int
    path: Path
    relpath: str
    conditions: str = "studio"


@dataclass(frozen=True)
class _Row:
    path: str
    label: str
    sha256: str
    width: int | None
    height: int | None
    side: str | None
    defect: str | None = None


ProgressFn = Callable[[int, int], None]


def product_catalog(classes: int) -> list[Product]:
    """The first ``classes`` products; class ``2g`` and ``2g+1`` are a look-alike pair."""
    return [_product(index) for index in range(classes)]


def mixed_catalog(classes: int, pairs: int) -> list[Product]:
    """``pairs`` look-alike pairs, then products that differ in shape or colour from every
    other: ``classes`` products in all."""
    if not 0 <= 2 * pairs <= classes:
        raise ConfigError(f"pairs={pairs}: between 0 and classes/2 ({classes // 2})")
    return [_product(i) for i in range(2 * pairs)] + [
        _product(2 * group) for group in range(pairs, pairs + classes - 2 * pairs)
    ]


def distinct_catalog(classes: int) -> list[Product]:
    """``classes`` products no two of which are a look-alike pair (the pairs' first halves)."""
    return [_product(2 * index) for index in range(classes)]


def _product(index: int) -> Product:
    group, variant = divmod(index, 2)
    # 7 shapes and 12 colours are coprime, so the first 84 groups all differ in shape or colour.
    shape = SHAPES[group % len(SHAPES)]
    colour = COLOURS[group % len(COLOURS)][1]
    colour2 = COLOURS[(group + 5) % len(COLOURS)][1] if shape == "capsule" else None
    prefix = DRUG_PREFIXES[group % len(DRUG_PREFIXES)]
    suffix = DRUG_SUFFIXES[(group // len(DRUG_PREFIXES)) % len(DRUG_SUFFIXES)]
    lap = group // (len(DRUG_PREFIXES) * len(DRUG_SUFFIXES))
    drug = f"{prefix}{suffix}{lap if lap else ''}"
    strength = STRENGTH_PAIRS[group % len(STRENGTH_PAIRS)][variant]
    labeler = 10000 + (group * 7919) % 90000
    product_code = (index * 37 + 11) % 10000
    code = (prefix[:2] + (str(lap) if lap else "")).upper()
    # two large digits; a pair's partners differ in both (37 apart)
    back_number = (index * 37 + 13) % 90 + 10
    # Some first variants have a blank back; their partner's back is printed, so the
    # pair stays distinguishable from either side.
    blank_back = variant == 0 and group % 4 == 1
    return Product(
        index=index,
        label=f"ndc-{labeler:05d}-{product_code:04d}-{drug}-{strength}mg",
        shape=shape,
        colour=colour,
        colour2=colour2,
        front=(code, str(strength)),
        back=() if blank_back else (str(back_number),),
        scored=group % 3 == 0 and shape not in ("capsule", "triangle"),
    )


def generate_dataset(
    out: Path,
    *,
    classes: int,
    per_class: int,
    size: int,
    seed: int,
    defects: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    overwrite: bool = False,
    lookalikes: bool = True,
    pairs: int | None = None,
    conditions: str = "studio",
) -> SynthResult:
    """Draw ``classes`` x ``per_class`` pill photographs of ``size`` px into ``out``.

    ``workers``: processes that draw (default: all cores for large sets, 1 for small
    ones); the files do not depend on it. ``progress(done, total)`` is called as files are
    written. ``overwrite`` replaces an earlier synthetic dataset in ``out``; any other
    non-empty folder is refused. ``lookalikes=False`` draws only products that differ in
    shape or colour (one of each look-alike pair): learnable from scratch on a CPU.
    ``pairs=k`` draws k look-alike pairs and makes the other products distinct.
    ``conditions="field"`` photographs on other surfaces with stronger colour casts and
    blur than the default ``"studio"`` (a hold-out from other conditions).
    With several workers, a calling script needs the usual
    ``if __name__ == "__main__":`` guard (workers re-import the main module).
    """
    _check_args(classes=classes, per_class=per_class, size=size, seed=seed, defects=defects)
    started = time.perf_counter()
    _prepare_out(out, overwrite=overwrite)
    if pairs is not None:
        products = mixed_catalog(classes, pairs)
    else:
        products = product_catalog(classes) if lookalikes else distinct_catalog(classes)
    imbalanced = products[-1] if defects else None
    if conditions not in CONDITIONS:
        raise ConfigError(f"conditions {conditions!r}: choose from {', '.join(CONDITIONS)}")
    jobs = list(_plan_jobs(out, products, per_class, size, seed, imbalanced, conditions))
    total = len(jobs) + (len(_DEFECT_PLAN) if defects else 0)
    n_workers = _worker_count(workers, len(jobs))
    rows: list[_Row] = []
    for row in _run_jobs(jobs, n_workers):
        rows.append(row)
        if progress is not None:
            progress(len(rows), total)
    planted: list[PlantedDefect] = []
    if defects:
        for row in _plant_defects(out, products, per_class, size, seed, rows):
            rows.append(row)
            planted.append(PlantedDefect(row.path, row.defect or ""))
            if progress is not None:
                progress(len(rows), total)
    manifest = _write_manifest(out, rows)
    seconds = time.perf_counter() - started
    log.info("wrote %d images of %d products to %s in %.1f s", len(rows), classes, out, seconds)
    return SynthResult(
        out=out,
        manifest=manifest,
        labels=tuple(p.label for p in products),
        images=len(rows),
        defects=tuple(planted),
        imbalanced_label=imbalanced.label if imbalanced else None,
        seconds=seconds,
        workers=n_workers,
    )


def _check_args(*, classes: int, per_class: int, size: int, seed: int, defects: bool) -> None:
    if classes < 1:
        raise ConfigError(f"classes must be at least 1, got {classes}")
    if per_class < 1:
        raise ConfigError(f"per_class must be at least 1, got {per_class}")
    if not 32 <= size <= 2048:
        raise ConfigError(f"size must be between 32 and 2048 px, got {size}")
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    if defects and (classes < 2 or per_class < 4):
        raise ConfigError(
            f"defects need at least 2 classes and 4 images per class, got {classes} x {per_class}"
        )


def _prepare_out(out: Path, *, overwrite: bool) -> None:
    """Refuse a non-empty folder unless it holds an earlier synthetic set and overwrite is on."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"--out {out} is not empty; choose an empty folder or overwrite")
        if not (out / MANIFEST_NAME).is_file():
            raise ConfigError(
                f"--out {out} holds no {MANIFEST_NAME}: refusing to overwrite a folder "
                "that synth did not write"
            )
        for child in out.iterdir():
            if child.is_dir() and child.name.startswith("ndc-"):
                shutil.rmtree(child)
        (out / MANIFEST_NAME).unlink()
    out.mkdir(parents=True, exist_ok=True)


def _plan_jobs(
    out: Path,
    products: list[Product],
    per_class: int,
    size: int,
    seed: int,
    imbalanced: Product | None,
    conditions: str = "studio",
) -> Iterator[_Job]:
    for product in products:
        count = max(1, per_class // 2) if product is imbalanced else per_class
        (out / product.label).mkdir(exist_ok=True)
        for index in range(count):
            relpath = f"{product.label}/img-{index:05d}.jpg"
            yield _Job(product, index, seed, size, out / relpath, relpath, conditions)


def _worker_count(workers: int | None, jobs: int) -> int:
    if workers is not None:
        if workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        return workers
    # A process pool costs ~0.3 s to start: not worth it for a few dozen images.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, jobs // 64))


def _run_jobs(jobs: list[_Job], workers: int) -> Iterator[_Row]:
    if workers == 1:
        yield from map(_render_job, jobs)
        return
    # forkserver: workers never inherit the CLI's progress-bar thread.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    chunk = max(1, min(32, len(jobs) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(_render_job, jobs, chunksize=chunk)


def _render_job(job: _Job) -> _Row:
    rng = _image_rng(job.seed, job.product.index, job.index)
    image, side = render_pill_photo(job.product, rng, job.size, conditions=job.conditions)
    data = _encode_jpeg(image, rng)
    _write_atomic(job.path, data)
    return _Row(job.relpath, job.product.label, sha256(data).hexdigest(), job.size, job.size, side)


def _image_rng(seed: int, class_index: int, index: int) -> np.random.Generator:
    """The RNG of one image: depends only on (seed, class, index), never on scheduling."""
    return np.random.default_rng(np.random.SeedSequence([seed, class_index, index]))


def _encode_jpeg(image: Image.Image, rng: np.random.Generator) -> bytes:
    buffer = BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(75, 96)))
    return buffer.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a hidden temporary file, so an interrupted run leaves no partial image."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- drawing -------------------------------------------------------------------------------


def render_pill_photo(
    product: Product, rng: np.random.Generator, size: int, *, conditions: str = "studio"
) -> tuple[Image.Image, str]:
    """One photograph of ``product`` (RGB, ``size`` x ``size``) and the side shown."""
    field = conditions == "field"
    side = "back" if rng.random() < BACK_PROBABILITY else "front"
    photo = _background(rng, size, FIELD_BACKGROUNDS if field else BACKGROUNDS)
    # The pill is drawn and rotated at 2x, then box-downsampled: antialiased edges and
    # glyphs; the rest of the scene is smooth, so it is composed at 1x.
    sprite = _pill_sprite(product, side, rng, size * SUPERSAMPLE)
    angle = float(rng.uniform(0, 360))
    sprite = sprite.rotate(angle, Image.Resampling.BILINEAR, expand=True).reduce(SUPERSAMPLE)
    centre = rng.uniform(0.4, 0.6, size=2) * size
    corner = (int(centre[0] - sprite.width / 2), int(centre[1] - sprite.height / 2))
    _cast_shadow(photo, sprite, corner, rng, scale=size / 128)
    photo.paste(sprite, corner, sprite)
    photo = _light(photo, rng, cast=0.12 if field else 0.06)
    if field or rng.random() < 0.5:
        blur = rng.uniform(0.4, 1.1) if field else rng.uniform(0.2, 0.7)
        photo = photo.filter(ImageFilter.GaussianBlur(float(blur)))
    return _add_noise(photo, rng), side


def _background(
    rng: np.random.Generator, size: int, palette: tuple[tuple[int, int, int], ...] = BACKGROUNDS
) -> Image.Image:
    """A surface colour with low-frequency texture."""
    base = np.array(palette[rng.integers(len(palette))], dtype=np.float32)
    base = base * rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    coarse = max(4, size // 16)
    texture = rng.normal(0.0, rng.uniform(2.0, 8.0), size=(coarse, coarse, 1)).astype(np.float32)
    small = np.clip(base + texture, 0, 255).astype(np.uint8)
    return Image.fromarray(small, "RGB").resize((size, size), Image.Resampling.BILINEAR)


def _pill_sprite(product: Product, side: str, rng: np.random.Generator, canvas: int) -> Image.Image:
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


def _cast_shadow(
    photo: Image.Image,
    sprite: Image.Image,
    corner: tuple[int, int],
    rng: np.random.Generator,
    *,
    scale: float,
) -> None:
    """Darken the surface (in place) under an offset, blurred copy of the pill's outline."""
    radius = float(rng.uniform(2.0, 5.0)) * scale
    margin = int(3 * radius) + 1
    shadow = Image.new("L", (sprite.width + 2 * margin, sprite.height + 2 * margin), 0)
    shadow.paste(sprite.getchannel("A"), (margin, margin))
    strength = float(rng.uniform(0.25, 0.5))
    shadow = shadow.filter(ImageFilter.GaussianBlur(radius)).point(lambda v: int(v * strength))
    offset = rng.uniform(2.0, 7.0, size=2) * scale * rng.choice([-1, 1], size=2)
    at = (corner[0] - margin + int(offset[0]), corner[1] - margin + int(offset[1]))
    # pasting black through the mask blends: pixel * (1 - mask / 255)
    photo.paste((0, 0, 0), (*at, at[0] + shadow.width, at[1] + shadow.height), shadow)


def _light(photo: Image.Image, rng: np.random.Generator, cast: float = 0.06) -> Image.Image:
    """Global brightness, a colour cast (up to ``cast`` per channel) and a gradient."""
    w, h = photo.size
    gain = rng.uniform(0.8, 1.15) * rng.uniform(1 - cast, 1 + cast, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    slope = rng.uniform(0.0, 0.25)
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)
    ramp = 1.0 + slope * (xs[None, :] * math.cos(angle) + ys[:, None] * math.sin(angle))
    lit = np.asarray(photo, dtype=np.float32) * ramp[..., None] * gain.astype(np.float32)
    return Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8), "RGB")


def _add_noise(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Sensor noise, on luminance only (a third of the random numbers for the same look)."""
    sigma = rng.uniform(0.0, 5.0)
    pixels = np.asarray(photo, dtype=np.float32)
    grain = rng.standard_normal(size=(*pixels.shape[:2], 1), dtype=np.float32)
    return Image.fromarray(np.clip(pixels + sigma * grain, 0, 255).astype(np.uint8), "RGB")


def _scale(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    r, g, b = (min(255, int(c * factor)) for c in colour)
    return (r, g, b)


# --- defects ------------------------------------------------------------------------------

# (class position, defect code): class 0 and 1 hold the planted files.
_DEFECT_PLAN = (
    (0, DEFECT_CORRUPT),
    (0, DEFECT_EMPTY),
    (1, DEFECT_GRAYSCALE),
    (1, DEFECT_TOO_SMALL),
    (1, DEFECT_DUPLICATE),
)


def _plant_defects(
    out: Path,
    products: list[Product],
    per_class: int,
    size: int,
    seed: int,
    rows: list[_Row],
) -> Iterator[_Row]:
    """Bad files named like good ones (``img-NNNNN.jpg`` after the last good index)."""
    next_index = {0: per_class, 1: per_class}
    for class_pos, code in _DEFECT_PLAN:
        product = products[class_pos]
        index = next_index[class_pos]
        next_index[class_pos] += 1
        relpath = f"{product.label}/img-{index:05d}.jpg"
        rng = _image_rng(seed, product.index, index)
        data, width, height = _defect_bytes(code, product, rng, size, out, rows)
        _write_atomic(out / relpath, data)
        digest = sha256(data).hexdigest()
        yield _Row(relpath, product.label, digest, width, height, None, code)


def _defect_bytes(
    code: str,
    product: Product,
    rng: np.random.Generator,
    size: int,
    out: Path,
    rows: list[_Row],
) -> tuple[bytes, int | None, int | None]:
    if code == DEFECT_EMPTY:
        return b"", None, None
    if code == DEFECT_DUPLICATE:
        # the same bytes as the first image of the first product, filed under another one
        source = rows[0]
        return (out / source.path).read_bytes(), source.width, source.height
    image, _ = render_pill_photo(product, rng, size)
    if code == DEFECT_GRAYSCALE:
        image = image.convert("L")
    elif code == DEFECT_TOO_SMALL:
        image = image.resize((size // 2, size // 2), Image.Resampling.BOX)
    data = _encode_jpeg(image, rng)
    if code == DEFECT_CORRUPT:
        data = data[: len(data) * 6 // 10]  # header intact, scan data cut: a truncated JPEG
    return data, image.width, image.height


def _write_manifest(out: Path, rows: list[_Row]) -> Path:
    rows = sorted(rows, key=lambda row: row.path)
    table = pa.table(
        {
            "path": [r.path for r in rows],
            "label": [r.label for r in rows],
            "sha256": [r.sha256 for r in rows],
            "width": [r.width for r in rows],
            "height": [r.height for r in rows],
            "side": [r.side for r in rows],
            "defect": [r.defect for r in rows],
        },
        schema=MANIFEST_SCHEMA,
    )
    path = out / MANIFEST_NAME
    tmp = out / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_manifest(out: Path) -> pa.Table:
    """The manifest ``generate_dataset`` wrote into ``out``."""
    return pq.read_table(out / MANIFEST_NAME)
