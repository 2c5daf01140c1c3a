"""Train / validation / test splits by content: a photo and its copies are on one side.

Each image belongs to a content group: images of one class with the same bytes (exact
duplicates) or a perceptual hash within ``max_distance`` bits (re-encodes, rescales,
burst shots) share a group, transitively. A group's split is a stable hash of the group's
key (the smallest SHA-256 among its members) salted with ``salt``, so:

- the copies of a photo are never on both sides of a split;
- an image's split depends on its group only, not on the rest of the dataset: adding
  images to a snapshot moves no earlier image, unless a new image joins an earlier
  image's group with a smaller SHA-256 (a near-duplicate arriving later; it then moves
  that whole group, and its copies stay together);
- no seeded shuffle: the same files give the same splits on any machine and in any order.

The test split is never used for checkpoint choice or early stopping; the gates and the
reported metrics read it.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rxvision.errors import DataValidationError

TRAIN, VAL, TEST = "train", "val", "test"
SPLITS = (TRAIN, VAL, TEST)
HASH_BITS = 64
# every row's path, sha256, content group and split, logged with each training run
SPLITS_ARTIFACT = "data/splits.json"


@dataclass(frozen=True)
class ImageKey:
    """What the split of one image is decided by."""

    sha256: str
    phash: int
    label: int


@dataclass(frozen=True)
class SplitAssignment:
    """The split of each row, and the content group it was decided for."""

    splits: list[str]
    groups: list[str]
    keys: list[ImageKey] = field(default_factory=list)

    def indices(self, split: str) -> list[int]:
        """The rows of ``split``, in row order."""
        return [i for i, s in enumerate(self.splits) if s == split]

    def counts(self) -> dict[str, int]:
        """Images per split."""
        found = Counter(self.splits)
        return {s: found.get(s, 0) for s in SPLITS}


def assign_splits(
    keys: Sequence[ImageKey],
    *,
    val_fraction: float,
    test_fraction: float,
    salt: str = "rxvision-split-v1",
    max_distance: int = 6,
) -> SplitAssignment:
    """The split of every image by its content group (see the module docstring)."""
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction {val_fraction} + test_fraction {test_fraction} leaves no training data"
        )
    groups = content_groups(keys, max_distance)
    group_key: dict[int, str] = {}
    for row, root in enumerate(groups):
        sha = keys[row].sha256
        if root not in group_key or sha < group_key[root]:
            group_key[root] = sha
    splits = [split_of(group_key[root], val_fraction, test_fraction, salt) for root in groups]
    return SplitAssignment(splits, [group_key[root] for root in groups], list(keys))


def split_of(group_key: str, val_fraction: float, test_fraction: float, salt: str) -> str:
    """The split of a content group: a uniform draw in [0, 1) from its salted hash."""
    digest = hashlib.sha256(f"{salt}:{group_key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return TEST
    if u < test_fraction + val_fraction:
        return VAL
    return TRAIN


def content_groups(keys: Sequence[ImageKey], max_distance: int) -> list[int]:
    """A group root per row: same label and (same SHA-256 or perceptual hashes within
    ``max_distance`` bits), closed transitively (union-find).

    Candidate pairs come from multi-index hashing: with ``max_distance + 1`` disjoint bit
    ranges, two hashes within the distance agree exactly on at least one range, so only
    rows sharing a range value are compared.
    """
    parent = list(range(len(keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first_of: dict[tuple[int, str], int] = {}
    for row, key in enumerate(keys):
        seen = first_of.setdefault((key.label, key.sha256), row)
        if seen != row:
            union(seen, row)
    if max_distance >= 0 and keys:
        hashes = np.array([k.phash for k in keys], dtype=np.uint64)
        labels = np.array([k.label for k in keys], dtype=np.int64)
        for a, b in _near_pairs(hashes, labels, max_distance):
            union(a, b)
    return [find(i) for i in range(len(keys))]


def _near_pairs(hashes: np.ndarray, labels: np.ndarray, max_distance: int) -> list[tuple[int, int]]:
    chunks = max_distance + 1
    edges = np.linspace(0, HASH_BITS, chunks + 1).astype(int)
    pairs: set[tuple[int, int]] = set()
    for lo, hi in itertools.pairwise(edges):
        width = int(hi - lo)
        part = (hashes >> np.uint64(lo)) & np.uint64((1 << width) - 1)
        bucket_key = labels.astype(np.uint64) * np.uint64(1 << width) + part
        order = np.argsort(bucket_key, kind="stable")
        sorted_keys = bucket_key[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for s, e in zip(starts, ends, strict=True):
            if e - s < 2:
                continue
            members = order[s:e]
            block = hashes[members]
            distance = _popcount(block[:, None] ^ block[None, :])
            a, b = np.nonzero(np.triu(distance <= max_distance, k=1))
            pairs.update(zip(members[a].tolist(), members[b].tolist(), strict=True))
    return sorted(pairs)


def _popcount(values: np.ndarray) -> np.ndarray:
    as_bytes = values.astype(">u8").view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)


def require_trainable(
    assignment: SplitAssignment, labels: Sequence[int], classes: Sequence[str]
) -> None:
    """Every class needs training images: name the classes whose groups all fell into
    validation or test (too few distinct photos to split)."""
    trained = {labels[i] for i in assignment.indices(TRAIN)}
    missing = [classes[c] for c in sorted(set(labels)) if c not in trained]
    if missing:
        raise DataValidationError(
            "no training image left for class(es) "
            + ", ".join(missing)
            + ": all their distinct photos (content groups) fell into validation/test; "
            "add more distinct photos of these products"
        )
