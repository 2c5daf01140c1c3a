"""The product catalogue of the synthetic dataset: drug products with an NDC-like folder
name (``ndc-17919-0011-zanex-10mg``: labeler code, product code, drug name, strength)
and what their pills look like.

Products come in look-alike pairs (the same drug in two strengths): same shape and
colour, different imprint on both sides, so a classifier has to read the imprint. The
catalogue depends only on the class index, never on a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from rxvision.errors import ConfigError

SHAPES = ("round", "oval", "oblong", "capsule", "diamond", "hexagon", "triangle")
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
DRUG_PREFIXES = ("zan", "cor", "lum", "vex", "tri", "ful", "mor", "dal", "sen", "pra", "qui", "ber")
DRUG_SUFFIXES = ("ex", "tor", "ima", "olin", "avir", "azol", "ipen", "etra")
STRENGTH_PAIRS = ((5, 10), (10, 20), (20, 40), (25, 50), (50, 100), (100, 200), (250, 500))


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
