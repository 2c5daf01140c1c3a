"""A whole batch scoring run in one process: images in S3 (or a folder), Parquet out.

A run has three steps, which ``score_batch`` (the CLI, ``rxvision score``) runs in one
process and the scoring DAG runs as tasks (``rxvision.pipeline.scoring``, one mapped
task per shard):

1. plan (``rxvision.serving.plan``): list the input and cut it into shards, saved as
   ``OUTPUT/_plan.json`` so that reruns score the same shards;
2. score each shard (``rxvision.serving.shard``): fetch, decode and preprocess with the
   model's contract, batch, score with the model pool (``rxvision.serving.model_pool``:
   the primary behind a circuit breaker, the fallback), commit
   ``OUTPUT/shards/<shard>.parquet``; a committed shard is skipped by a rerun;
3. finalize (``rxvision.serving.finalize``): ``_manifest.json``, then ``_SUCCESS``.

Rows (``rxvision.serving.predictions``) say which model scored them and why the
fallback did; an unreadable image becomes a row with ``error`` set and never stops the
batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rxvision.cpu_budget import limit_compute_threads
from rxvision.serving.cache import open_cache
from rxvision.serving.finalize import finalize_scoring
from rxvision.serving.isolated_decode import start_decoders
from rxvision.serving.model_pool import ModelLoader, ModelPool, fallback_for
from rxvision.serving.plan import plan_shards
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.shard import score_shard
from rxvision.storage.uri_store import Storage, normalize_uri


def score_batch(
    model_uri: str,
    input_uri: str,
    output_uri: str,
    *,
    config: ScoringConfig | None = None,
    storage: Storage | None = None,
    loader: ModelLoader | None = None,
    progress: Callable[[str, int], None] | None = None,
    planned: Callable[[int], None] | None = None,
    allow_empty: bool = False,
    fallback_on_load_failure: bool = True,
) -> dict[str, Any]:
    """Plan, score every shard in this process, finalize; return the manifest (the run
    summary). A rerun into the same output skips committed shards.

    ``planned(images)`` is told the run's image count once it is planned; ``progress(
    shard_id, rows)`` the rows a shard has so far (its whole count once it is committed,
    or was before: a skipped shard counts as done).

    No image (or no input folder): ``NoInputImages`` with nothing written, unless
    ``allow_empty`` (an empty manifest and ``_SUCCESS``; a missing folder stays an
    error). ``fallback_on_load_failure``: see ``ModelPool`` (this process is the only
    try, so by default the fallback scores at once)."""
    config = config or ScoringConfig()
    if config.cpu_threads:
        limit_compute_threads(config.cpu_threads)
    start_decoders(config)  # warms up while the run is planned and the model loaded
    storage = storage or Storage()
    sink = config.statsd.sink()
    began = time.perf_counter()
    input_uri, output_uri = normalize_uri(input_uri), normalize_uri(output_uri)
    # no pinning here: the pool loads each model once per process, so one run scores
    # with one version; tasks of a DAG share a version through pin_model_uri
    primary = model_uri
    fallback = config.fallback_uri or fallback_for(model_uri, config.fallback_alias)
    shards = plan_shards(
        input_uri,
        output_uri,
        config.shard_size,
        suffixes=config.suffixes,
        storage=storage,
        allow_empty=allow_empty,
    )
    if planned is not None:
        planned(sum(len(shard.keys) for shard in shards))
    pool = ModelPool(
        primary,
        fallback,
        config,
        sink=sink,
        loader=loader,
        fallback_on_load_failure=fallback_on_load_failure,
    )
    cache = open_cache(config.cache, storage)  # one per run: each partition is read once
    results = []
    for shard in shards:
        report = (lambda n, s=shard.shard_id: progress(s, n)) if progress else None
        results.append(
            score_shard(
                primary,
                shard.keys,
                output_uri,
                shard.shard_id,
                config=config,
                pool=pool,
                storage=storage,
                sink=sink,
                progress=report,
                cache=cache,
                source_tags=shard.source_tags(),
            )
        )
        if progress is not None:  # every key has its row now (or had, if skipped)
            progress(shard.shard_id, len(shard.keys))
    extra = {
        "model_uri": model_uri,
        "fallback_uri": fallback,
        "input_uri": input_uri,
        "models": pool.describe(),
        "skipped_shards": [r.shard_id for r in results if r.skipped],
        "wall_seconds": round(time.perf_counter() - began, 3),
    }
    return finalize_scoring(
        output_uri,
        [s.shard_id for s in shards],
        storage=storage,
        sink=sink,
        extra=extra,
        cache=config.cache,
    )
