"""The synthetic product catalogue: NDC-like labels, look-alike pairs, distinct looks."""

from __future__ import annotations

import re

import pytest

from rxvision.data.synth.catalog import SHAPES, product_catalog

pytestmark = pytest.mark.unit

LABEL = re.compile(r"^ndc-\d{5}-\d{4}-[a-z0-9]+-\d+mg$")


def test_catalog_pairs_look_alike_but_differ_in_imprint() -> None:
    products = product_catalog(200)
    labels = [p.label for p in products]
    assert len(set(labels)) == len(labels)
    assert all(LABEL.match(label) for label in labels)
    for first, second in zip(products[::2], products[1::2], strict=True):
        assert (first.shape, first.colour, first.colour2) == (
            second.shape,
            second.colour,
            second.colour2,
        )
        assert first.front != second.front
        assert first.back != second.back  # either side tells the pair apart
    looks = {(p.shape, p.colour) for p in products[:168:2]}
    assert len(looks) == 84  # the first 84 pairs all differ in shape or colour
    assert {p.shape for p in products} == set(SHAPES)
