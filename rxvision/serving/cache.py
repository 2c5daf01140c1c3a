"""The inference cache: prediction rows kept in S3 (or a folder), reused across runs.

A cached row is keyed by three things:

- the image's content hash (sha256 of its bytes): an image overwritten under the same
  S3 key has another hash and misses, so a row is never served for bytes it was not
  computed from;
- the model version (``name/version`` and the run behind it: a registered model deleted
  and created again reuses version numbers, never run ids);
- the preprocessing hash (the version's stored ``ImageSpec`` contract), together with
  the row contract (temperature, top-k, test-time augmentation, review threshold: what
  else shapes a row). A new champion or a changed contract is another partition: it
  misses by construction, and nothing has to be invalidated.

A row is served only when the runtime that computed it is among the run's configured
``runtimes``: INT8 rows differ from fp32 ones within the quantization gates, so a run
configured without ``onnxruntime-int8`` (for fp32 answers) never gets an INT8 row. The
fp32 runtimes agree within the export parity tolerance, so the filter, not the
partition, carries the runtime: a run that allows INT8 still serves the fp32 rows of a
run that did not, and a newer INT8 row does not hide an older fp32 one from a run
without INT8 (until a compaction keeps only the newest row of each image).

Layout: one partition per (version, preprocessing hash, row contract), under it
append-only segments, one Parquet object per committed scoring shard::

    <uri>/<name>/<version>/<run8>-p<prep12>-r<rows12>/seg-<utc>-<token>.parquet

Why segments and not the hash space: a scoring shard's images have random content
hashes, so a layout by hash prefix makes every shard read and rewrite every prefix
object (conditional writes racing between the DAG's parallel tasks); a per-image object
is 100k PUTs at 100k images. A segment per shard is one PUT per shard (200 at 100k
images and 500 per shard) and no write ever conflicts. A reader lists the partition once
per process and reads its segments into a hash -> row index (100k rows: a few MB of
Parquet); when a partition holds more than ``max_segments`` objects the writer merges
them into one (``rxvision.serving.cache_compaction``, on Arrow columns), so a reader's
GETs stay bounded. Races (two compactions, a reader
listing while one deletes) can only cost a miss or a duplicate of an equally valid row,
never a wrong row: every row in a partition was computed for its key.

Each row also records the S3 key and listing tag (ETag and size) it was read from: the
scoring plan lists the input anyway (ListObjectsV2 returns both per key), so a rerun of
unchanged objects is served from the listing and the index, with no GET at all. The
ETag is derived from the bytes: an object overwritten under its key misses and is
downloaded and looked up by content hash as before.

Only rows the primary model scored are stored: error rows and fallback rows never are.
Writes happen after the shard commits and never fail the run (logged and counted).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from rxvision.errors import NotFound
from rxvision.serving.cache_compaction import merge_segments
from rxvision.serving.model_contract import LoadedModel

log = logging.getLogger(__name__)

SEGMENT_SCHEMA = pa.schema(
    [
        ("content_sha256", pa.string()),
        ("label", pa.string()),
        ("confidence", pa.float32()),
        ("topk_labels", pa.list_(pa.string())),
        ("topk_probs", pa.list_(pa.float32())),
        ("model_version", pa.string()),
        ("needs_review", pa.bool_()),
        ("runtime", pa.string()),
        ("localized", pa.bool_()),
        ("localization", pa.string()),
        # where the bytes were read: the S3 key and its listing tag (ETag and size), so
        # a later run serves an unchanged object without downloading it (null: unknown)
        ("source_key", pa.string()),
        ("source_tag", pa.string()),
    ]
)
_KEYS = ("content_sha256", "source_key", "source_tag")
# the prediction columns a cached row carries over (the rest are per run: key, shard)
CACHED_COLUMNS = tuple(name for name in SEGMENT_SCHEMA.names if name not in _KEYS)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class CacheConfig(BaseModel):
    """Where the cache lives and whether a run reads it (``configs/serving.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # null: no cache (the default without a config file: unit tests, ad-hoc folders)
    uri: str | None = None
    # False (``rxvision score --no-cache``): a full run; its fresh rows are still stored
    reuse: bool = True
    # more objects than this in a partition: the writer merges them into one
    max_segments: int = Field(32, ge=2)


class CacheStorage(Protocol):
    """The object operations the cache needs (``rxvision.storage.uri_store.Storage``)."""

    def list(self, root: str) -> list[str]: ...

    def read(self, uri: str) -> bytes: ...

    def write(self, uri: str, data: bytes) -> None: ...

    def delete(self, uri: str) -> None: ...


class EventSink(Protocol):
    """Where cache counters go (``rxvision.serving.metrics.StatsdSink``)."""

    def event(self, name: str, count: int = 1) -> None: ...


def open_cache(config: CacheConfig, storage: CacheStorage) -> InferenceCache | None:
    """The configured cache, or None when ``uri`` is null."""
    return InferenceCache(config, storage) if config.uri else None


def content_hash(data: bytes) -> str:
    """sha256 of an image's bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def preprocessing_hash(loaded: LoadedModel) -> str:
    """The hash of the version's stored preprocessing contract (its ``ImageSpec``)."""
    return _digest(loaded.spec.to_dict())


@dataclass(frozen=True)
class RowContract:
    """What besides the model and the pixels shapes a row."""

    top_k: int
    tta_rotations: int
    review_threshold: float

    def digest(self, loaded: LoadedModel) -> str:
        """Hash of the contract with the version's calibration and classes."""
        return _digest(
            {
                "top_k": self.top_k,
                "tta_rotations": self.tta_rotations,
                "review_threshold": self.review_threshold,
                "temperature": loaded.temperature,
                "classes": loaded.classes,
            }
        )


def partition_uri(root: str, loaded: LoadedModel, contract: RowContract) -> str:
    """The partition of ``loaded`` under ``contract``: every key in it matches."""
    version = hashlib.sha256(loaded.ref.cache_id.encode()).hexdigest()[:8]
    label = "/".join(_UNSAFE.sub("_", part) or "_" for part in loaded.label.split("/"))
    name = f"{version}-p{preprocessing_hash(loaded)[:12]}-r{contract.digest(loaded)[:12]}"
    return f"{root.rstrip('/')}/{label}/{name}"


def segment_name() -> str:
    """Sorts by time (newest last, to the microsecond): on a duplicate hash the newest
    row wins."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"seg-{stamp}-{uuid.uuid4().hex[:12]}.parquet"


@dataclass
class _Index:
    """A partition's rows by content hash, and the hash of each (key, tag) seen.
    ``runtimes``: only rows computed by one of these are kept (None: every row)."""

    rows: dict[str, dict[str, Any]]
    sources: dict[tuple[str, str], str]
    runtimes: frozenset[str] | None = None
    other_runtime: int = 0

    def add(self, row: Mapping[str, Any]) -> None:
        if self.runtimes is not None and row.get("runtime") not in self.runtimes:
            self.other_runtime += 1
            return
        digest = str(row["content_sha256"])
        self.rows[digest] = _cached(row)
        if row.get("source_key") and row.get("source_tag"):
            self.sources[(str(row["source_key"]), str(row["source_tag"]))] = digest


class CachePartition:
    """One partition's rows, read once: ``get`` is a dict lookup, safe from threads.
    ``serve`` False (``reuse`` off): every lookup misses, rows are still stored."""

    def __init__(
        self,
        uri: str,
        rows: dict[str, dict[str, Any]],
        segments: int,
        serve: bool = True,
        sources: dict[tuple[str, str], str] | None = None,
    ) -> None:
        self.uri = uri
        self.rows = rows
        self.sources = sources or {}
        self.segments = segments
        self.serve = serve

    def get(self, digest: str) -> dict[str, Any] | None:
        """The cached prediction columns of an image's content hash, or None."""
        return self.rows.get(digest) if self.serve else None

    def get_source(self, key: str, tag: str) -> tuple[str, dict[str, Any]] | None:
        """(content hash, prediction columns) of the object ``key`` at listing ``tag``
        (its S3 ETag and size) when a run read exactly that object before, else None.
        An object overwritten under the same key has another ETag: it misses."""
        if not self.serve:
            return None
        digest = self.sources.get((key, tag))
        row = self.rows.get(digest) if digest is not None else None
        return (digest, row) if digest is not None and row is not None else None


class InferenceCache:
    """Reads partitions (once per process) and appends segments after commits."""

    def __init__(self, config: CacheConfig, storage: CacheStorage) -> None:
        if config.uri is None:
            raise ValueError("an InferenceCache needs a cache uri")
        self.config = config
        self.root = config.uri.rstrip("/")
        self.storage = storage
        self._partitions: dict[tuple[str, frozenset[str] | None], CachePartition] = {}

    def partition(
        self, loaded: LoadedModel, contract: RowContract, runtimes: Iterable[str] | None = None
    ) -> CachePartition:
        """The partition of ``loaded`` (read on first use; empty when ``reuse`` is off
        or it cannot be read: a miss costs a model call, never a wrong row), serving
        only rows computed by one of ``runtimes`` (None: any runtime)."""
        uri = partition_uri(self.root, loaded, contract)
        allowed = frozenset(runtimes) if runtimes is not None else None
        if (uri, allowed) not in self._partitions:
            self._partitions[(uri, allowed)] = self._read(uri, allowed)
        return self._partitions[(uri, allowed)]

    def _read(self, uri: str, runtimes: frozenset[str] | None) -> CachePartition:
        if not self.config.reuse:
            return CachePartition(uri, {}, 0, serve=False)
        try:
            segments = list_segments(self.storage.list(uri))
            index = _index(self.storage, segments, runtimes)
        except Exception as exc:  # the cache is an optimisation: unreadable is empty
            log.warning("cannot read the inference cache at %s: %s; scoring afresh", uri, exc)
            return CachePartition(uri, {}, 0)
        log.info(
            "inference cache %s: %d rows (%d known objects) in %d segments%s",
            uri,
            len(index.rows),
            len(index.sources),
            len(segments),
            f"; {index.other_runtime} rows of runtimes not in {sorted(runtimes)} are not served"
            if index.other_runtime and runtimes is not None
            else "",
        )
        return CachePartition(uri, index.rows, len(segments), sources=index.sources)

    def store(self, part: CachePartition, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append ``rows`` (each with ``content_sha256``) as one segment, then compact
        when the partition has grown past ``max_segments``. Returns how many rows were
        written; raises on a storage failure (the caller logs it, the run goes on)."""
        fresh = [r for r in rows if r.get("content_sha256")]
        if not fresh:
            return 0
        table = pa.Table.from_pylist(
            [{name: row.get(name) for name in SEGMENT_SCHEMA.names} for row in fresh],
            schema=SEGMENT_SCHEMA,
        )
        self.storage.write(f"{part.uri}/{segment_name()}", parquet_bytes(table))
        if part.serve:
            # later shards of this run serve copies of these bytes; a partition that
            # never serves (--no-cache) keeps nothing: at 100,000 rows that was ~200 MB
            index = _Index(part.rows, part.sources)
            for row in fresh:
                index.add(row)
        self._compact(part.uri)
        return len(fresh)

    def store_committed(
        self, part: CachePartition, rows: Iterable[Mapping[str, Any]], sink: EventSink
    ) -> int:
        """``store`` after a shard committed: a failure is logged and counted
        (``cache.write_failed``), never raised; the rows are committed already."""
        try:
            written = self.store(part, rows)
        except Exception as exc:  # the cache must never fail a committed run
            log.warning("inference cache %s not updated: %s: %s", part.uri, type(exc).__name__, exc)
            sink.event("cache.write_failed")
            return 0
        sink.event("cache.stored", written)
        return written

    def _compact(self, uri: str) -> None:
        """Merge the partition's segments into one when there are too many; the merged
        ones are deleted after the merge is written (a reader in between sees both)."""
        segments = list_segments(self.storage.list(uri))
        if len(segments) <= self.config.max_segments:
            return
        tables = [t for t in (_read_segment(self.storage, s) for s in segments) if t is not None]
        if not tables:
            return  # another writer merged them since they were listed
        table = merge_segments(tables, SEGMENT_SCHEMA)
        self.storage.write(f"{uri}/{segment_name()}", parquet_bytes(table))
        for segment in segments:
            self.storage.delete(segment)
        log.info("inference cache %s: %d segments merged (%d rows)", uri, len(segments), len(table))


def list_segments(listed: Iterable[str]) -> list[str]:
    """The segment objects among ``listed``, oldest first."""
    return sorted(u for u in listed if u.rsplit("/", 1)[-1].startswith("seg-"))


def _index(
    storage: CacheStorage, segments: Iterable[str], runtimes: frozenset[str] | None = None
) -> _Index:
    """hash -> prediction columns and (key, tag) -> hash over ``segments`` in name order
    (the newest row of an allowed runtime wins); a segment deleted since it was listed
    (merged by a compaction) is skipped. Segments written before the source columns
    existed read them as null."""
    index = _Index({}, {}, runtimes)
    for segment in segments:
        table = _read_segment(storage, segment)
        for row in table.to_pylist() if table is not None else ():
            index.add(row)
    return index


def _read_segment(storage: CacheStorage, segment: str) -> pa.Table | None:
    """A segment's rows; None when it was deleted since it was listed (merged)."""
    try:
        return pq.read_table(io.BytesIO(storage.read(segment)))
    except NotFound:
        return None


def _cached(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: row.get(name) for name in CACHED_COLUMNS}


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as one zstd-compressed Parquet object."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()
