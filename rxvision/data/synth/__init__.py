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

Modules, one concept each: ``catalog`` (products and look-alike pairs), ``pill`` (shape,
shading, score line, imprint glyphs), ``photo`` (surface, pose, light, shadow, blur,
noise, JPEG quality), ``defects`` (planted bad files), ``output`` (the folder, atomic
writes, the manifest), ``generate`` (generate_dataset, drawing in worker processes).
This package exposes the public API below.
"""

from rxvision.data.synth.catalog import (
    SHAPES,
    Product,
    distinct_catalog,
    mixed_catalog,
    product_catalog,
)
from rxvision.data.synth.defects import PlantedDefect
from rxvision.data.synth.generate import SynthResult, generate_dataset
from rxvision.data.synth.output import MANIFEST_NAME, read_manifest
from rxvision.data.synth.photo import CONDITIONS, render_pill_photo

__all__ = [
    "CONDITIONS",
    "MANIFEST_NAME",
    "SHAPES",
    "PlantedDefect",
    "Product",
    "SynthResult",
    "distinct_catalog",
    "generate_dataset",
    "mixed_catalog",
    "product_catalog",
    "read_manifest",
    "render_pill_photo",
]
