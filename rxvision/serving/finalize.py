"""Finishing a scoring run: ``_manifest.json`` and ``_SUCCESS``, once every shard is in.

The manifest merges the shards' summaries (rows, cache use, metrics, every circuit
breaker switch) and says where the run's review gallery is; ``_SUCCESS`` is written
last, so a reader that sees it sees a complete run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rxvision.serving.cache import CacheConfig
from rxvision.serving.errors import ScoringError
from rxvision.serving.metrics import ScoringMetrics, StatsdSink
from rxvision.serving.plan import planned_ids
from rxvision.serving.review_gallery import review_summary
from rxvision.serving.shard import read_summary, shard_uri, utc_now
from rxvision.storage.uri_store import Storage, join, normalize_uri


def finalize_scoring(
    output_uri: str,
    shard_ids: Sequence[str] | None = None,
    *,
    storage: Storage | None = None,
    sink: StatsdSink | None = None,
    extra: dict[str, Any] | None = None,
    cache: CacheConfig | None = None,
) -> dict[str, Any]:
    """Check every shard is committed, then write the review gallery
    (``rxvision.serving.review_gallery``: its failure is recorded, never fatal),
    ``_manifest.json`` and ``_SUCCESS`` (last). The expected shards are ``shard_ids``,
    else the plan's. The gallery's crops are kept beside the inference cache ``cache``
    (``rxvision.serving.thumbnail_cache``), so a rescore re-makes none. ``ScoringError``
    names the missing shards (nothing written)."""
    storage = storage or Storage()
    output_uri = normalize_uri(output_uri)
    expected = list(shard_ids) if shard_ids is not None else planned_ids(storage, output_uri)
    committed = {
        Path(uri).name.removesuffix(".parquet")
        for uri in storage.list(join(output_uri, "shards"))
        if uri.endswith(".parquet")
    }
    missing = sorted(set(expected) - committed)
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ScoringError(f"{output_uri}: {len(missing)} shards not committed: {shown}")
    merged = ScoringMetrics()
    shards = []
    events: list[dict[str, Any]] = []
    for shard in expected:
        summary = read_summary(storage, output_uri, shard)
        merged.merge_summary(summary)
        shards.append(
            {
                "shard_id": shard,
                "uri": shard_uri(output_uri, shard),
                "rows": summary.get("images"),
                "cached": summary.get("cached", 0),
                "downloaded": summary.get("downloaded"),
                "rows_by_model": summary.get("rows_by_model", {}),
            }
        )
        events.extend(summary.get("circuit_events", []))
    # before the manifest, which records where it is (or why it is missing)
    review = review_summary(
        output_uri, [s["uri"] for s in shards], storage, sink or StatsdSink(), cache=cache
    )
    manifest = {
        "output_uri": output_uri,
        "finished": utc_now(),
        "rows": sum(int(s["rows"] or 0) for s in shards),
        "cached": sum(int(s["cached"] or 0) for s in shards),
        "downloaded": sum(int(s["downloaded"] or 0) for s in shards),
        # every breaker switch of every shard, oldest first: the incident tracker's hook
        "circuit_events": sorted(events, key=lambda e: str(e.get("time"))),
        "shards": shards,
        "metrics": merged.summary(),
        **review,
        **(extra or {}),
    }
    storage.write(join(output_uri, "_manifest.json"), json.dumps(manifest, indent=2).encode())
    storage.delete_prefix(join(output_uri, "_tmp"))
    storage.write(join(output_uri, "_SUCCESS"), b"")
    if sink is not None:
        sink.summary(manifest["metrics"], scope="run")
    return manifest
