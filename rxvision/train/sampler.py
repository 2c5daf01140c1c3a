"""A seeded training sampler that can resume in the middle of an epoch.

Each epoch's order is ``torch.randperm(n)`` from ``torch.Generator().manual_seed(seed +
epoch)``: the same on every rank and in every run with the same seed, whatever happened
before (no generator state to save). For ``world_size`` ranks the permutation is padded
by repeating it from the start to a multiple of ``world_size``, and rank ``r`` takes
positions ``r, r + world_size, ...``, as ``torch.utils.data.DistributedSampler`` does:
the ranks partition the padded permutation and see the same number of samples.

Resuming mid-epoch: ``skip_batches(k)`` makes the next iteration start after this rank's
first ``k`` batches, so the images of the batches trained before the interruption are not
seen twice in that epoch; the iteration after it is whole again.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation, split across ranks, able to skip done batches.

    ``n``: dataset size. ``batch_size``: per-rank batch size of the DataLoader that uses
    this sampler (``skip_batches`` counts in these batches). ``drop_last``: whether that
    DataLoader drops the trailing partial batch. The sampler itself never drops: it yields
    every index of this rank, and the DataLoader (``DataLoader(..., batch_size=,
    drop_last=True)``) drops the partial batch; with ``drop_last`` ``__len__`` leaves it
    out of the count, so ``len(loader)`` and the epoch length agree either way.

    ``repeats``: passes over the set per epoch, each in its own order (the first is the
    order of a one-pass epoch); a small set gets more optimizer steps per validation.

    Set ``epoch`` with ``set_epoch`` before each epoch (Lightning does it). Used under
    Lightning with several devices, the Trainer needs ``use_distributed_sampler=False``:
    the ranks are split here, not by a wrapping ``DistributedSampler``.
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int,
        drop_last: bool,
        repeats: int = 1,
    ) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n = n
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.repeats = repeats
        self.epoch = 0
        self._skip = 0

    @property
    def per_rank(self) -> int:
        """Indices each rank gets in a whole epoch (after padding)."""
        return math.ceil(self.n * self.repeats / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from the next iteration on."""
        self.epoch = epoch

    def skip_batches(self, k: int) -> None:
        """Start the next iteration after this rank's first ``k`` batches of the epoch.

        Applies once: the iteration after that one is whole again. ``k`` past the end of
        the epoch leaves nothing to yield.
        """
        if k < 0:
            raise ValueError(f"cannot skip a negative number of batches ({k})")
        self._skip = k

    def order(self) -> list[int]:
        """This rank's whole order for the current epoch (no batch skipped)."""
        if self.n == 0:
            return []
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        # ``repeats`` passes, each its own permutation (the first is the one-pass order)
        indices: list[int] = []
        for _ in range(self.repeats):
            indices += torch.randperm(self.n, generator=generator).tolist()
        padding = self.per_rank * self.world_size - len(indices)
        if padding:
            indices += (indices * math.ceil(padding / len(indices)))[:padding]
        return indices[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        return iter(self.order()[skip * self.batch_size :])

    def __len__(self) -> int:
        # the whole epoch, even while batches are skipped: Lightning restores the count of
        # batches already done and runs until len(loader), so a shorter length would end
        # the resumed epoch early
        whole = self.per_rank
        if self.drop_last:
            whole -= whole % self.batch_size
        return whole
