"""generate_dataset: draws a synthetic pill dataset in ImageFolder layout,
``OUT/<product>/img-NNNNN.jpg`` plus ``OUT/manifest.parquet``, in worker processes.

Each image draws from its own RNG seeded by ``(seed, class, index)``: the same seed gives
byte-identical files whatever the number of workers (with the same Pillow and numpy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from rxvision.cpu_budget import usable_cores
from rxvision.data.synth.catalog import (
    Product,
    distinct_catalog,
    mixed_catalog,
    product_catalog,
)
from rxvision.data.synth.defects import DEFECT_PLAN, PlantedDefect, plant_defects
from rxvision.data.synth.output import Row, prepare_out, write_atomic, write_manifest
from rxvision.data.synth.photo import CONDITIONS, encode_jpeg, image_rng, render_pill_photo
from rxvision.errors import ConfigError
from rxvision.forkserver import worker_context

log = logging.getLogger(__name__)


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


ProgressFn = Callable[[int, int], None]


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
    prepare_out(out, overwrite=overwrite)
    if pairs is not None:
        products = mixed_catalog(classes, pairs)
    else:
        products = product_catalog(classes) if lookalikes else distinct_catalog(classes)
    imbalanced = products[-1] if defects else None
    if conditions not in CONDITIONS:
        raise ConfigError(f"conditions {conditions!r}: choose from {', '.join(CONDITIONS)}")
    jobs = list(_plan_jobs(out, products, per_class, size, seed, imbalanced, conditions))
    total = len(jobs) + (len(DEFECT_PLAN) if defects else 0)
    n_workers = _worker_count(workers, len(jobs))
    rows: list[Row] = []
    for row in _run_jobs(jobs, n_workers):
        rows.append(row)
        if progress is not None:
            progress(len(rows), total)
    planted: list[PlantedDefect] = []
    if defects:
        for row in plant_defects(out, products, per_class, size, seed, rows):
            rows.append(row)
            planted.append(PlantedDefect(row.path, row.defect or ""))
            if progress is not None:
                progress(len(rows), total)
    manifest = write_manifest(out, rows)
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
    return max(1, min(usable_cores(), jobs // 64))


def _run_jobs(jobs: list[_Job], workers: int) -> Iterator[Row]:
    if workers == 1:
        yield from map(_render_job, jobs)
        return
    # forkserver: workers never inherit the CLI's progress-bar thread
    context = worker_context(["rxvision.data.synth.generate"])
    chunk = max(1, min(32, len(jobs) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(_render_job, jobs, chunksize=chunk)


def _render_job(job: _Job) -> Row:
    rng = image_rng(job.seed, job.product.index, job.index)
    image, side = render_pill_photo(job.product, rng, job.size, conditions=job.conditions)
    data = encode_jpeg(image, rng)
    write_atomic(job.path, data)
    return Row(job.relpath, job.product.label, sha256(data).hexdigest(), job.size, job.size, side)
