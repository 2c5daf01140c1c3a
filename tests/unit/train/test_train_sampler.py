"""ResumableSampler: seeded per-epoch order, rank split, and skipping done batches."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from rxvision.train.sampler import ResumableSampler

pytestmark = pytest.mark.unit


def sampler(n: int = 23, **kwargs: object) -> ResumableSampler:
    options: dict[str, object] = {"seed": 7, "batch_size": 4, "drop_last": False} | kwargs
    return ResumableSampler(n, **options)  # type: ignore[arg-type]


def test_the_order_is_a_permutation_fixed_by_seed_and_epoch() -> None:
    first, again = sampler(), sampler()
    order = list(first)
    assert sorted(order) == list(range(23))
    assert list(again) == order
    assert list(first) == order  # iterating again: the same epoch, the same order
    expected = torch.randperm(23, generator=torch.Generator().manual_seed(7 + 0)).tolist()
    assert order == expected
    assert list(sampler(seed=8)) != order


def test_repeats_are_whole_passes_each_in_its_own_order() -> None:
    once, thrice = list(sampler()), sampler(repeats=3)
    order = list(thrice)
    assert len(order) == len(thrice) == 69
    passes = [order[i * 23 : (i + 1) * 23] for i in range(3)]
    assert all(sorted(p) == list(range(23)) for p in passes)  # every image once per pass
    assert passes[0] == once and passes[1] != passes[0] and passes[2] != passes[1]
    # resuming skips batches of the repeated epoch, not of one pass
    thrice.skip_batches(7)
    assert list(thrice) == order[28:]


def test_repeated_epochs_split_across_ranks_without_overlap() -> None:
    ranks = [list(sampler(repeats=2, rank=r, world_size=3)) for r in range(3)]
    assert [len(r) for r in ranks] == [16, 16, 16]  # 46 indices padded to 48
    merged = [i for r in ranks for i in r]
    assert all(merged.count(i) >= 2 for i in range(23))


def test_each_epoch_has_its_own_order() -> None:
    s = sampler()
    orders = []
    for epoch in range(3):
        s.set_epoch(epoch)
        orders.append(list(s))
    assert len({tuple(o) for o in orders}) == 3
    s.set_epoch(1)
    assert list(s) == orders[1]  # set back: the same order again, nothing else kept


@pytest.mark.parametrize(("n", "world_size"), [(23, 4), (24, 4), (3, 5), (10, 3)])
def test_ranks_partition_the_padded_permutation(n: int, world_size: int) -> None:
    per_rank = -(-n // world_size)
    shards = [list(sampler(n, rank=r, world_size=world_size)) for r in range(world_size)]
    assert all(len(shard) == per_rank for shard in shards)
    padded = torch.randperm(n, generator=torch.Generator().manual_seed(7)).tolist()
    while len(padded) < per_rank * world_size:  # repeated from the start
        padded += padded[: per_rank * world_size - len(padded)]
    interleaved = [shards[i % world_size][i // world_size] for i in range(len(padded))]
    assert interleaved == padded
    assert set().union(*map(set, shards)) == set(range(n))


@pytest.mark.parametrize("k", [0, 1, 3, 5, 6, 9])
def test_skip_batches_yields_the_tail_of_the_order_once(k: int) -> None:
    s = sampler(rank=1, world_size=2)  # 12 indices on this rank: 3 batches of 4
    s.set_epoch(3)
    whole = list(s)
    s.skip_batches(k)
    assert len(s) == 12  # the whole epoch: Lightning counts the restored batches in it
    assert list(s) == whole[4 * k :]
    assert len(s) == 12 and list(s) == whole  # the next iteration is whole again


def test_len_leaves_the_partial_batch_out_with_drop_last() -> None:
    s = sampler(23, batch_size=5, drop_last=True)  # 4 whole batches and 3 more
    assert len(s) == 20
    assert len(list(s)) == 23  # the sampler yields all; the DataLoader drops
    loader = DataLoader(list(range(23)), batch_size=5, sampler=s, drop_last=True)
    assert len(loader) == 4 and [len(b) for b in loader] == [5, 5, 5, 5]
    s.skip_batches(1)
    assert len(s) == 20  # the whole epoch, as Lightning counts restored batches in it
    batches = list(DataLoader(list(range(23)), batch_size=5, sampler=s, drop_last=True))
    assert [len(b) for b in batches] == [5, 5, 5]
    assert len(sampler(23, batch_size=5, drop_last=False)) == 23


def test_a_data_loader_resumes_after_the_skipped_batches() -> None:
    s = sampler(20, batch_size=4)
    loader = DataLoader(list(range(20)), batch_size=4, sampler=s)
    whole = [b.tolist() for b in loader]
    s.skip_batches(2)
    assert len(loader) == 5
    assert [b.tolist() for b in loader] == whole[2:]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": -1},
        {"world_size": 0},
        {"rank": 2, "world_size": 2},
        {"rank": -1},
        {"batch_size": 0},
        {"repeats": 0},
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        sampler(**kwargs)


def test_skip_refuses_a_negative_count_and_an_empty_dataset_yields_nothing() -> None:
    with pytest.raises(ValueError, match="negative"):
        sampler().skip_batches(-1)
    empty = sampler(0, world_size=2)
    assert list(empty) == [] and len(empty) == 0
