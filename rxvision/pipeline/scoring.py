"""The batch scoring steps, one function per Airflow task of the scoring DAG.

``plan`` pins the champion to one version and lists the shards (each becomes a mapped
task), ``score`` commits one shard's Parquet, ``publish`` checks every shard is in,
writes the manifest and ``_SUCCESS`` and moves the ``latest`` pointer.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from rxvision.errors import ConfigError
from rxvision.pipeline.config import ScoringSettings
from rxvision.pipeline.nightly import safe_id
from rxvision.serving.batch import (
    ScoringConfig,
    Shard,
    Storage,
    fallback_for,
    finalize_scoring,
    load_scoring_config,
    pin_model_uri,
    plan_shards,
    score_shard,
)

log = logging.getLogger(__name__)


def output_uri(settings: ScoringSettings, dag_run_id: str) -> str:
    """Where one DAG run's predictions go (a rerun of the run writes to the same place)."""
    return f"{settings.output_root.rstrip('/')}/{safe_id(dag_run_id)}"


def plan(input_uri: str, output: str, config: ScoringConfig | None = None) -> list[dict[str, Any]]:
    """Pin the model and list the input shards (saved in the output's ``_plan.json``):
    one work item per shard, each naming the models and the output (a mapped task's input)."""
    config = config or load_scoring_config()
    model_uri = pin_model_uri(config.model_uri, config.tracking_uri)
    fallback = config.fallback_uri or fallback_for(config.model_uri, config.fallback_alias)
    if fallback and "@" in fallback:
        fallback = pin_model_uri(fallback, config.tracking_uri)
    shards = plan_shards(input_uri, output, config.shard_size, suffixes=config.suffixes)
    log.info("%d shards of %s to score with %s into %s", len(shards), input_uri, model_uri, output)
    common = {
        "model_uri": model_uri,
        "fallback_uri": fallback,
        "input_uri": input_uri,
        "output_uri": output,
    }
    return [{**common, "shard": s.to_json()} for s in shards]


def score(item: dict[str, Any], config: ScoringConfig | None = None) -> dict[str, Any]:
    """Score one planned shard (skipped when a try before already committed it)."""
    config = config or load_scoring_config()
    one = Shard.from_json(item["shard"])
    result = score_shard(
        str(item["model_uri"]),
        one.keys,
        str(item["output_uri"]),
        one.shard_id,
        config=config,
        fallback_uri=item.get("fallback_uri"),
    )
    return {
        "shard_id": result.shard_id,
        "uri": result.uri,
        "rows": result.rows,
        "skipped": result.skipped,
    }


def publish(
    items: list[dict[str, Any]],
    latest_uri: str,
    *,
    dag_run_id: str | None = None,
) -> dict[str, Any]:
    """Finalise the run (manifest, ``_SUCCESS``) and point ``latest_uri`` at it."""
    if not items:
        raise ConfigError("nothing was planned: no input images to publish")
    planned = items[0]
    shard_ids = [item["shard"]["shard_id"] for item in items]
    output = str(planned["output_uri"])
    manifest = finalize_scoring(
        output,
        shard_ids,
        extra={
            "model_uri": planned["model_uri"],
            "fallback_uri": planned.get("fallback_uri"),
            "input_uri": planned["input_uri"],
            "dag_run_id": dag_run_id,
        },
    )
    metrics = manifest.get("metrics", {})
    latest = {
        "uri": output,
        "manifest": f"{output}/_manifest.json",
        "rows": manifest["rows"],
        "error_rate": metrics.get("error_rate"),
        "fallback_count": metrics.get("fallback_count"),
        "latency_ms": metrics.get("latency_ms"),
        "model_uri": planned["model_uri"],
        "finished": manifest["finished"],
        "dag_run_id": dag_run_id,
    }
    if not latest_uri.startswith("s3://") and "://" in latest_uri:
        raise ConfigError(f"latest_uri must be s3:// or a path, got {latest_uri}")
    Storage().write(latest_uri, json.dumps(latest, indent=2).encode())
    log.info(
        "published %d rows at %s (error rate %s)", latest["rows"], output, latest["error_rate"]
    )
    return latest
