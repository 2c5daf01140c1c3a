"""A process's share of the cores."""

from __future__ import annotations

import pytest

from rxvision.cpu_budget import limit_compute_threads, threads_per_slot, usable_cores

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("slots", "cores", "threads"), [(1, 16, 16), (4, 16, 4), (3, 8, 2), (4, 2, 1), (1, 1, 1)]
)
def test_a_slot_gets_its_share_of_the_cores_and_at_least_one(
    slots: int, cores: int, threads: int
) -> None:
    assert threads_per_slot(slots, cores) == threads


def test_the_default_share_is_of_the_cores_this_process_may_use() -> None:
    assert threads_per_slot(1) == usable_cores() >= 1


def test_no_slots_and_no_threads_are_refused() -> None:
    with pytest.raises(ValueError, match="slots"):
        threads_per_slot(0)
    with pytest.raises(ValueError, match="threads"):
        limit_compute_threads(0)
