"""A scoring shard, scored and committed: ``OUTPUT/shards/<shard>.parquet``.

``score_shard`` is what one mapped task of the scoring DAG runs. Rows go to
``OUTPUT/_tmp/<shard>.<token>.parquet`` and are then committed to
``OUTPUT/shards/<shard>.parquet`` (the shard's summary, ``OUTPUT/_summary/<shard>.json``,
is written first, and before it the review crops of the rows that need review,
``rxvision.serving.review_crops``); a committed shard is skipped by a rerun, so a key is
never written twice. The primary's fresh rows go to the inference cache once the shard
has committed.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rxvision.errors import NotFound
from rxvision.serving.cache import InferenceCache, open_cache
from rxvision.serving.isolated_decode import start_decoders
from rxvision.serving.metrics import ScoringMetrics, StatsdSink
from rxvision.serving.model_pool import ModelPool, fallback_for
from rxvision.serving.review_crops import ShardCrops
from rxvision.serving.review_gallery import load_review_config
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.shard_scorer import ProgressFn, ShardScorer
from rxvision.storage.uri_store import Storage, join, normalize_uri

log = logging.getLogger(__name__)


@dataclass
class ShardResult:
    """What ``score_shard`` did."""

    shard_id: str
    uri: str
    rows: int
    skipped: bool
    summary: dict[str, Any] = field(default_factory=dict)


def shard_uri(output_uri: str, shard: str) -> str:
    """Where a committed shard lives."""
    return join(output_uri, "shards", f"{shard}.parquet")


def score_shard(
    model_uri: str,
    shard_keys: Sequence[str],
    output_uri: str,
    shard_id: str,
    *,
    config: ScoringConfig | None = None,
    fallback_uri: str | None = None,
    pool: ModelPool | None = None,
    storage: Storage | None = None,
    sink: StatsdSink | None = None,
    progress: ProgressFn | None = None,
    fallback_on_load_failure: bool = True,
    cache: InferenceCache | None = None,
    source_tags: Mapping[str, str] | None = None,
) -> ShardResult:
    """Score one shard's keys (full ``s3://`` URIs or paths) into
    ``OUTPUT/shards/<shard_id>.parquet``, unless a run already committed it.

    ``cache`` (default: ``config.cache``'s): unchanged images under an unchanged primary
    are served from it (``cached`` rows); the primary's fresh rows are added to it
    once the shard has committed. ``source_tags`` (``Shard.source_tags``): an object
    whose key and listing tag (ETag and size) the cache has seen is served without
    being downloaded; any other is downloaded and looked up by its content hash.

    The Airflow task of one shard calls this. ``fallback_uri`` defaults to the
    ``fallback`` alias of a registry ``model_uri``. Raises ``ScoringError`` (nothing
    committed) when neither model can be loaded, and ``PrimaryUnavailable`` when the
    primary cannot and ``fallback_on_load_failure`` is False (a try before the last).
    """
    config = config or ScoringConfig()
    storage = storage or Storage()
    sink = sink or config.statsd.sink()
    output_uri = normalize_uri(output_uri)
    final = shard_uri(output_uri, shard_id)
    if storage.exists(final):
        log.info("%s already committed at %s: skipped", shard_id, final)
        sink.event("shards.skipped")
        return ShardResult(shard_id, final, 0, True, read_summary(storage, output_uri, shard_id))
    # the decoders' server warms up while the models load (a shard the cache serves
    # whole never uses it: a process started for nothing, cheaper than waiting for it)
    start_decoders(config)
    if pool is None:
        fallback = (
            fallback_uri or config.fallback_uri or fallback_for(model_uri, config.fallback_alias)
        )
        pool = ModelPool(
            model_uri,
            fallback,
            config,
            sink=sink,
            fallback_on_load_failure=fallback_on_load_failure,
        )
    cache = cache or open_cache(config.cache, storage)
    metrics = ScoringMetrics()
    began = time.perf_counter()
    switches = len(pool.breaker.events)  # the pool may have scored shards before this one
    crops = review_crops(output_uri, storage)
    scorer = ShardScorer(pool, config, shard_id, metrics, sink, cache, crops)
    scorer.run(shard_keys, storage, progress, source_tags)
    if crops is not None:
        crops.save()  # before the commit: a committed shard has its crops
    table = scorer.table()
    metrics.seconds = time.perf_counter() - began
    cached = sum(bool(c) for c in table.column("cached").to_pylist())
    summary = {
        "shard_id": shard_id,
        "uri": final,
        "model_uri": model_uri,
        "models": pool.describe(),
        "rows_by_model": _rows_by_model(table),
        "finished": utc_now(),
        "cached": cached,
        # objects read from the store (the rest: cache hits by key and ETag, no GET)
        "downloaded": scorer.downloaded,
        "circuit_events": [
            {**event, "shard_id": shard_id} for event in pool.breaker.events[switches:]
        ],
        **metrics.summary(),
    }
    commit_shard(storage, output_uri, shard_id, table, summary)
    sink.summary(summary)
    sink.event("shards.committed")
    sink.event("cache.hits", cached)
    if cache is not None and scorer.partition is not None:
        cache.store_committed(scorer.partition, scorer.cacheable(), sink)
    log.info(
        "%s: %d rows (%d from the cache, %d errors, %d by fallback) in %.1f s, %.1f images/s",
        shard_id,
        table.num_rows,
        cached,
        metrics.errors,
        metrics.fallback,
        metrics.seconds,
        metrics.images_per_s,
    )
    return ShardResult(shard_id, final, table.num_rows, False, summary)


def review_crops(output_uri: str, storage: Storage) -> ShardCrops | None:
    """Where the shard keeps its review crops (``rxvision.serving.review_crops``), at the
    gallery's size and quality; None when the gallery is off or its config unreadable
    (the gallery then makes every crop itself)."""
    try:
        review = load_review_config()
    except Exception as exc:
        log.warning("review config unreadable: no review crops made while scoring: %s", exc)
        return None
    if not review.enabled:
        return None
    return ShardCrops(
        output_uri, storage, thumb_px=review.thumb_px, jpeg_quality=review.jpeg_quality
    )


def _rows_by_model(table: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for role, version in zip(
        table.column("scored_by").to_pylist(),
        table.column("model_version").to_pylist(),
        strict=True,
    ):
        if role:
            name = f"{role}:{version}"
            counts[name] = counts.get(name, 0) + 1
    return counts


def commit_shard(
    storage: Storage, output_uri: str, shard: str, table: pa.Table, summary: dict[str, Any]
) -> None:
    """Summary first, then the Parquet under a temporary key, then the commit: a shard
    is committed exactly when ``shards/<id>.parquet`` exists, and then its summary does."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    storage.write(join(output_uri, "_summary", f"{shard}.json"), json.dumps(summary).encode())
    tmp = join(output_uri, "_tmp", f"{shard}.{uuid.uuid4().hex[:12]}.parquet")
    storage.write(tmp, buffer.getvalue())
    storage.move(tmp, shard_uri(output_uri, shard))


def read_summary(storage: Storage, output_uri: str, shard: str) -> dict[str, Any]:
    """A committed shard's summary (empty when it has none)."""
    try:
        return dict(json.loads(storage.read(join(output_uri, "_summary", f"{shard}.json"))))
    except NotFound:
        return {}


def utc_now() -> str:
    """Now, in UTC, to the second (``2026-01-31T02:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
