"""bench/feature_nights.py's own counting: a night's small shards and the table of nights."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from feature_nights import night_row  # noqa: E402
from report import render_nights  # noqa: E402

pytestmark = pytest.mark.unit


def a_set(sizes: list[int], sets_read: list[str]) -> SimpleNamespace:
    """What ``night_row`` reads of a feature set: its shards' paths, extra and sets read."""
    shards = [
        SimpleNamespace(paths=[f"p{n}-{i}" for i in range(size)]) for n, size in enumerate(sizes)
    ]
    return SimpleNamespace(
        images=sum(sizes),
        shards=shards,
        extra={"reused": 2100, "read_in_place": 2000},
        sets_read=lambda: sets_read,
    )


def test_a_nights_row_counts_the_shards_under_half_a_full_one() -> None:
    built = a_set([1000, 1000, 499, 500, 120], ["a", "b"])
    row = night_row(4, 3.456, built, shard_size=1000)  # type: ignore[arg-type]
    assert row == {
        "night": 4,
        "images": 3119,
        "seconds": 3.46,
        "shards": 5,
        "small": 2,
        "reused": 2100,
        "read_in_place": 2000,
        "sets_read": 2,
    }


def test_the_nights_table_has_a_row_per_night() -> None:
    nights = [
        night_row(1, 20.0, a_set([1000, 1000], []), 1000),  # type: ignore[arg-type]
        night_row(2, 1.5, a_set([1000, 1000, 20], ["x"]), 1000),  # type: ignore[arg-type]
    ]
    table = render_nights({"nights": nights})
    assert table.splitlines()[0] == (
        "| night | images | seconds | shards | small | read in place | sets read |"
    )
    assert "| 2 | 2,020 | 1.50 | 3 | 1 | 2,000 | 1 |" in table.splitlines()
