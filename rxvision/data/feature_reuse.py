"""An earlier feature set's rows, reused by content: an image whose bytes are unchanged
since that set was built is copied from it, never decoded again.

A nightly snapshot of a pharmacy catalogue differs from the night before by a few
percent, yet decoding and finding the pill costs ~3.5 ms of CPU per photo: ~220 s for
100,000 photos on two cores, every night, for the same pixels. Rows are matched by the
file's sha256 within sets of the same preprocessing config (its hash covers the image
spec, the spec's version and the store's format), and ``load_image`` gives the same
array for the same bytes and spec, bit for bit: a reused row holds exactly the pixels a
decode would give, so training and scoring still see the same input.

Which earlier set: ``RecentSets`` names the few committed last with each config, and a
build reads the one holding most of its images (``rows_among``), so an ad-hoc build of a
few images between two nights does not cost the next night its reuse.
"""

from __future__ import annotations

import io
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from rxvision.data.feature_manifest import ShardRecord, rows_by_sha256
from rxvision.errors import FeatureStoreError, NotFound, RxVisionError
from rxvision.storage.s3 import S3Store

log = logging.getLogger(__name__)

# earlier shards held in memory at once (~28 MB each at 96 px, 1,000 rows): both sets
# are in path order, so the rows of one new shard come from one or two earlier shards
KEEP_SHARDS = 4
# <root>/_latest/<config hash>.json names the newest set of each config
LATEST_DIR = "_latest"
# ... and the few committed before it: rows are reused from whichever holds most
RECENT_SETS = 3


@dataclass(frozen=True)
class ReusedRow:
    """One row of an earlier set: its stored pixels and content facts."""

    pixels: np.ndarray
    phash: str
    located: str


class EarlierRows:
    """The rows of one committed set by file sha256; ``fetch(shard record)`` returns the
    ``.npy`` bytes of the object it reads. Shards are read on first use and a few kept."""

    def __init__(
        self,
        set_key: str,
        shards: Sequence[ShardRecord],
        fetch: Callable[[ShardRecord], bytes],
        keep: int = KEEP_SHARDS,
    ) -> None:
        self.set_key = set_key
        self.shards = list(shards)
        self._fetch = fetch
        self._keep = max(1, keep)
        self._loaded: OrderedDict[int, np.ndarray] = OrderedDict()
        self._unreadable: set[int] = set()
        self._where = rows_by_sha256(self.shards)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, sha256: object) -> bool:
        where = self._where.get(sha256) if isinstance(sha256, str) else None
        return where is not None and where[0] not in self._unreadable

    def row(self, sha256: str) -> ReusedRow:
        """The stored row of the image whose file hashes to ``sha256``."""
        number, row = self._where[sha256]
        shard = self.shards[number]
        stored = shard.array_rows()[row]
        return ReusedRow(self._shard(number)[stored], shard.phash[row], shard.located[row])

    def _shard(self, number: int) -> np.ndarray:
        if number in self._loaded:
            self._loaded.move_to_end(number)
            return self._loaded[number]
        shard = self.shards[number]
        name = f"{shard.set_key or self.set_key}/{shard.key}"
        if number in self._unreadable:
            raise FeatureStoreError(f"{name}: unreadable (see above)")
        try:
            array = self._read(name, shard)
        except FeatureStoreError as exc:
            # its rows are no longer offered: later shards send them to the decoders
            self._unreadable.add(number)
            log.warning("%s; its %d rows are decoded instead", exc, len(shard.paths))
            raise
        self._loaded[number] = array
        if len(self._loaded) > self._keep:
            self._loaded.popitem(last=False)
        return array

    def _read(self, name: str, shard: ShardRecord) -> np.ndarray:
        try:
            array = np.load(io.BytesIO(self._fetch(shard)), allow_pickle=False)
        except (OSError, ValueError, RxVisionError) as exc:
            raise FeatureStoreError(f"{name}: cannot read: {exc}") from exc
        if array.ndim != 4 or not _holds_rows(array, shard):
            raise FeatureStoreError(
                f"{name}: {array.shape[0] if array.ndim else 0} rows of "
                f"shape {array.shape[1:]}, the manifest lists {len(shard.paths)}"
            )
        return array


def _holds_rows(array: np.ndarray, shard: ShardRecord) -> bool:
    # all of the record's rows in order, or (an object read in place by a later set)
    # at least the rows it lists
    if shard.rows is None:
        return len(array) == len(shard.paths)
    return len(array) > max(shard.rows, default=-1)


class RecentSets:
    """The sets last committed with each preprocessing config, newest first: one small
    object per config under ``<root>/_latest/``, so finding them never lists the store."""

    def __init__(self, root_uri: str, s3: S3Store) -> None:
        self.root_uri = root_uri
        self.s3 = s3

    def keys(self, config_hash: str) -> list[str]:
        """The sets last committed with the config, newest first (none: empty)."""
        try:
            pointer = json.loads(self.s3.get_bytes(self._uri(config_hash)))
        except NotFound:
            return []
        # a pointer written before it kept the recent sets names the newest alone
        return [str(k) for k in pointer.get("recent") or [pointer.get("key")] if k]

    def mark_newest(self, key: str, config_hash: str) -> None:
        """Make set ``key`` the newest of the config; the oldest beyond ``RECENT_SETS``
        leaves the list."""
        recent = [key, *(k for k in self.keys(config_hash) if k != key)]
        pointer = {"key": key, "recent": recent[:RECENT_SETS]}
        self.s3.put_bytes(self._uri(config_hash), json.dumps(pointer).encode())

    def _uri(self, config_hash: str) -> str:
        return f"{self.root_uri}/{LATEST_DIR}/{config_hash}.json"


def rows_among(shards: Sequence[ShardRecord], wanted: Collection[str]) -> int:
    """How many rows of a set (its ``shards``) have a sha256 in ``wanted``."""
    return sum(digest in wanted for shard in shards for digest in shard.sha256)
