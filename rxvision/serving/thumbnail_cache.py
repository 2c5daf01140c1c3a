"""Review-gallery thumbnails kept beside the inference cache: a rescore re-makes no crop.

Each gallery item shows the model's input crop, re-made from the image: one GET, a
decode, the pill's localization and crop, a JPEG. That is the gallery's whole cost, and
a cached rescore (no GET, no model call) paid it again for every row still needing
review. A thumbnail depends only on the image's bytes (their sha256, which every
prediction row carries), the preprocessing contract (``ImageSpec``) and the thumbnail's
size and quality, so it is kept under exactly those, beside the inference cache::

    <cache uri>/_thumbnails/<contract12>/seg-<utc>-<token>.parquet   (content_sha256, jpeg)

``contract12`` hashes the spec, ``thumb_px`` and ``jpeg_quality``: another contract or
size is another partition and misses by construction. A gallery reads each partition it
needs once (one LIST and its segments) and appends the thumbnails it made as one
segment; past ``max_segments`` the writer merges them into one holding the newest
``keep`` thumbnails, so what a reader GETs stays bounded. Only thumbnails of the exact
bytes that were scored are stored (the image re-read must hash to the row's
``content_sha256``), so a cached picture is always what the model saw.

Like the inference cache this is an optimisation: a partition that cannot be read is
empty, a write that fails is logged and counted, and the gallery is written either way.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
from collections.abc import Set
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rxvision.data.imaging import ImageSpec
from rxvision.errors import NotFound
from rxvision.serving.cache import (
    CacheConfig,
    CacheStorage,
    list_segments,
    parquet_bytes,
    segment_name,
)

log = logging.getLogger(__name__)

THUMBNAILS_DIR = "_thumbnails"
SCHEMA = pa.schema([("content_sha256", pa.string()), ("jpeg", pa.binary())])


@dataclass
class _Partition:
    """One contract's thumbnails as read, and those made since (to store)."""

    uri: str
    thumbs: dict[str, bytes]
    fresh: dict[str, bytes] = field(default_factory=dict)


def open_thumbnails(
    cache: CacheConfig | None,
    storage: CacheStorage,
    *,
    thumb_px: int,
    jpeg_quality: int,
    keep: int = 20_000,
) -> ThumbnailCache | None:
    """The thumbnail cache beside the inference cache ``cache`` (None: it has no uri).
    With ``reuse`` off (``rxvision score --no-cache``) nothing is read, all is stored."""
    if cache is None or not cache.uri:
        return None
    return ThumbnailCache(
        cache.uri,
        storage,
        thumb_px=thumb_px,
        jpeg_quality=jpeg_quality,
        reuse=cache.reuse,
        max_segments=cache.max_segments,
        keep=keep,
    )


class ThumbnailCache:
    """Thumbnails by (contract, content hash). ``get`` and ``put`` are safe from the
    gallery's download threads; ``flush`` stores what was put, once per gallery."""

    def __init__(
        self,
        root: str,
        storage: CacheStorage,
        *,
        thumb_px: int,
        jpeg_quality: int,
        reuse: bool = True,
        max_segments: int = 32,
        keep: int = 20_000,
    ) -> None:
        self.root = f"{root.rstrip('/')}/{THUMBNAILS_DIR}"
        self.storage = storage
        self.thumb_px = thumb_px
        self.jpeg_quality = jpeg_quality
        self.reuse = reuse
        self.max_segments = max_segments
        self.keep = keep
        self._partitions: dict[str, _Partition] = {}
        self._uris: dict[ImageSpec, str] = {}
        self._lock = threading.Lock()
        self.hits = 0

    def partition_uri(self, spec: ImageSpec) -> str:
        """Where the thumbnails of ``spec`` at this size and quality are kept."""
        if spec not in self._uris:  # hashed once per spec, not twice per flagged row
            key = {"spec": spec.to_dict(), "px": self.thumb_px, "quality": self.jpeg_quality}
            digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
            self._uris[spec] = f"{self.root}/{digest[:12]}"
        return self._uris[spec]

    def get(self, spec: ImageSpec, digest: str) -> bytes | None:
        """The cached thumbnail of the image whose bytes hash to ``digest``, or None."""
        part = self._partition(spec)
        with self._lock:
            found = part.thumbs.get(digest) or part.fresh.get(digest)
            self.hits += found is not None
        return found

    def put(self, spec: ImageSpec, digest: str, jpeg: bytes) -> None:
        """Keep ``jpeg`` as the thumbnail of the bytes hashing to ``digest`` (stored by
        ``flush``)."""
        part = self._partition(spec)
        with self._lock:
            if digest not in part.thumbs:
                part.fresh[digest] = jpeg

    def flush(self) -> int:
        """Store every partition's new thumbnails as one segment each (merging past
        ``max_segments``); how many were stored. Raises on a storage failure."""
        stored = 0
        for part in self._partitions.values():
            if not part.fresh:
                continue
            self.storage.write(f"{part.uri}/{segment_name()}", _segment(part.fresh))
            part.thumbs.update(part.fresh)
            stored += len(part.fresh)
            part.fresh = {}
            self._compact(part.uri)
        return stored

    def _partition(self, spec: ImageSpec) -> _Partition:
        uri = self.partition_uri(spec)
        with self._lock:  # read once, whichever thread asks first
            if uri not in self._partitions:
                self._partitions[uri] = _Partition(uri, self._read(uri) if self.reuse else {})
            return self._partitions[uri]

    def _read(self, uri: str) -> dict[str, bytes]:
        try:
            thumbs = read_segments(self.storage, list_segments(self.storage.list(uri)))
        except Exception as exc:  # an optimisation: unreadable is empty
            log.warning("cannot read the thumbnail cache at %s: %s; re-making crops", uri, exc)
            return {}
        log.info("thumbnail cache %s: %d thumbnails", uri, len(thumbs))
        return thumbs

    def _compact(self, uri: str) -> None:
        """Merge the partition's segments into one of the newest ``keep`` thumbnails when
        there are too many (the merged ones are deleted after the merge is written)."""
        segments = list_segments(self.storage.list(uri))
        if len(segments) <= self.max_segments:
            return
        thumbs = read_segments(self.storage, segments)
        newest = dict(list(thumbs.items())[-self.keep :])
        self.storage.write(f"{uri}/{segment_name()}", _segment(newest))
        for segment in segments:
            self.storage.delete(segment)
        log.info(
            "thumbnail cache %s: %d segments merged (%d kept)", uri, len(segments), len(newest)
        )


def read_segments(
    storage: CacheStorage, segments: list[str], wanted: Set[str] | None = None
) -> dict[str, bytes]:
    """hash -> JPEG over ``segments`` oldest first (insertion order: the newest last),
    only the hashes in ``wanted`` when given (one segment in memory at a time besides
    them); a segment deleted since it was listed (merged) is skipped."""
    thumbs: dict[str, bytes] = {}
    chosen = pa.array(sorted(wanted), pa.string()) if wanted is not None else None
    for segment in segments:
        try:
            table = pq.read_table(io.BytesIO(storage.read(segment)))
        except NotFound:
            continue
        if chosen is not None:
            # only the wanted crops become Python bytes (a run's segments hold every crop)
            table = table.filter(pc.is_in(table.column("content_sha256"), value_set=chosen))
        digests = table.column("content_sha256").to_pylist()
        for digest, jpeg in zip(digests, table.column("jpeg").to_pylist(), strict=True):
            thumbs.pop(digest, None)  # re-inserted: counts as new
            thumbs[digest] = jpeg
    return thumbs


def _segment(thumbs: dict[str, bytes]) -> bytes:
    table = pa.table({"content_sha256": list(thumbs), "jpeg": list(thumbs.values())}, schema=SCHEMA)
    return parquet_bytes(table)
