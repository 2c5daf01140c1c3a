"""An earlier feature set's shards read in place: a new set lists the earlier objects
that still hold most of its rows instead of copying them into objects of its own.

A night's snapshot differs from the night before by a few percent. Copying its unchanged
rows (``feature_reuse``) spares their decoding but still moves each one through this
host twice: at 96 px a 100,000-photo set is 2.8 GB read from S3 and 2.8 GB written back,
~35 s of a warm night, then downloaded again by training into a new local folder. A
record that names the earlier object (``ShardRecord.set_key``) and the rows of it that
are still in the set (``ShardRecord.rows``) moves nothing: only the new photos, and the
rows of objects that lost most of theirs, are written.

An object is read in place only while its rows in the new set are at least ``MIN_SHARE``
of its rows and of a full shard (``shard_size``). So a set never makes training fetch a
shard mostly for rows it no longer holds: the few survivors of a mostly-removed shard are
copied into the new set's own shards. And small shards merge: each night's few new photos
make a small shard, which the next night copies, with that night's new photos, into a
fuller one, instead of sets naming one more small object every night. Each
object read in place is first checked by its ``.npy`` header and size (one ranged GET):
one that is gone, cut short or of another shape is not referenced, and its rows go the
copy-or-decode way. The pixels are the earlier set's, which a decode of the same bytes
under the same spec reproduces bit for bit.

A set lists the sets it reads (``FeatureManifest.sets_read``): those must be kept as long
as it is.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.lib import format as npy_format

from rxvision.data.feature_manifest import FeatureManifest, ShardRecord, rows_by_sha256
from rxvision.data.source_image import SourceImage

# the smallest share of an earlier object's rows that keeps it read in place
MIN_SHARE = 0.5
# an .npy header of a 4-d uint8 array is 128 bytes; read a little more to be sure
NPY_HEAD_BYTES = 1024
# the headers' ranged GETs in flight at once (~100 objects at 100,000 photos)
HEADER_READS = 8

# the number of rows of the stored array at a key (None: gone, or not a shard of the
# expected row shape), from its header
StoredRows = Callable[[str], int | None]


@dataclass(frozen=True)
class ReferencePlan:
    """The records read in place from an earlier set, and the images left to write."""

    shards: list[ShardRecord]
    rest: list[SourceImage]

    @property
    def rows(self) -> int:
        """How many rows are read in place."""
        return sum(len(s.paths) for s in self.shards)


def plan_references(
    images: Sequence[SourceImage],
    earlier: FeatureManifest,
    stored_rows: StoredRows,
    shard_size: int,
) -> ReferencePlan:
    """Which of ``images`` (sorted by path) are read in place from ``earlier``'s objects,
    matched by sha256, and which are left to write (in their order) into shards of
    ``shard_size`` rows."""
    where = rows_by_sha256(earlier.shards)
    groups: dict[int, list[tuple[SourceImage, int]]] = {}
    for image in images:
        found = where.get(image.sha256) if image.sha256 else None
        if found is not None:
            groups.setdefault(found[0], []).append((image, found[1]))
    numbers = sorted(groups)
    keys = [earlier.object_key(earlier.shards[number]) for number in numbers]
    # one ranged GET each, waiting on the network: concurrent (stored_rows only reads)
    with ThreadPoolExecutor(HEADER_READS) as pool:
        stored = dict(zip(numbers, pool.map(stored_rows, keys), strict=True))
    referenced: list[ShardRecord] = []
    kept: set[str] = set()
    for number in numbers:
        group = groups[number]
        record = _referenced(earlier.shards[number], group, stored[number], earlier, shard_size)
        if record is not None:
            referenced.append(record)
            kept.update(image.path for image, _ in group)
    rest = [image for image in images if image.path not in kept]
    return ReferencePlan(referenced, rest)


def _referenced(
    shard: ShardRecord,
    group: list[tuple[SourceImage, int]],
    stored: int | None,
    earlier: FeatureManifest,
    shard_size: int,
) -> ShardRecord | None:
    """A record of ``group``'s rows read in place from ``shard``'s object (``stored``
    rows by its header), or None when the object is unusable, would be mostly unread, or
    would keep a small shard (its rows are then merged into the new set's shards)."""
    rows = shard.array_rows()
    if stored is None or len(rows) != len(shard.paths) or max(rows, default=0) >= stored:
        return None
    if len(group) < MIN_SHARE * max(stored, shard_size):
        return None
    picked = [rows[row] for _, row in group]
    return ShardRecord(
        key=shard.key,
        paths=[image.path for image, _ in group],
        labels=[image.label for image, _ in group],
        sha256=[image.sha256 for image, _ in group],
        phash=[shard.phash[row] for _, row in group],
        located=[shard.located[row] for _, row in group],
        set_key=shard.set_key or earlier.key,
        rows=None if picked == list(range(stored)) else picked,
    )


def stored_rows_of(head: bytes, size: int, row_shape: tuple[int, ...]) -> int | None:
    """The row count of an ``.npy`` uint8 array of rows of ``row_shape`` from the first
    bytes of its file and its size; None when it is not such an array of that size."""
    stream = io.BytesIO(head)
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = npy_format.read_array_header_2_0(stream)
    except (ValueError, OSError, EOFError):
        return None
    if fortran or dtype != np.uint8 or len(shape) != 4 or tuple(shape[1:]) != row_shape:
        return None
    if size != stream.tell() + int(np.prod(shape)):
        return None
    return int(shape[0])
