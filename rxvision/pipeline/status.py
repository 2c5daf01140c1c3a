"""``rxvision status``: the champion, each DAG's last run, SLA misses, latest predictions."""

from __future__ import annotations

import json
import logging
from typing import Any

from rxvision.errors import NotFound, RxVisionError
from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.alerts import list_alerts
from rxvision.pipeline.config import PipelineConfig
from rxvision.storage.s3 import S3Store

log = logging.getLogger(__name__)

# the test split: what the gates judged (val_top1 is the checkpoint choice's score)
KEY_METRICS = (
    "test_top1",
    "test_top5",
    "test_ece",
    "test_ece_uncalibrated",
    "test_images",
    "val_top1",
    "temperature",
)


def champion_status() -> dict[str, Any] | None:
    """The champion version with its key metrics (None when there is none yet)."""
    from rxvision.registry.model_registry import ModelRegistry, load_registry_config

    registry = ModelRegistry(load_registry_config())
    champion = registry.get_alias(registry.config.aliases.champion)
    if champion is None:
        return None
    metrics: dict[str, float] = {}
    if champion.run_id:
        run = registry.client.get_run(champion.run_id)
        for key in KEY_METRICS:
            value = run.data.metrics.get(f"final/{key}", run.data.metrics.get(key))
            if value is not None:
                metrics[key] = float(value)
    return {
        "name": registry.name,
        "version": champion.version,
        "uri": f"models:/{registry.name}/{champion.version}",
        "metrics": metrics,
        # the look-alikes it confuses on its test split: class>taken-for recall, worst first
        "pairs": champion.tags.get("rxvision.eval.pairs", ""),
        "fallback": getattr(registry.get_alias(registry.config.aliases.fallback), "version", None),
    }


def last_runs(client: AirflowClient, dag_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each DAG's newest run (id, state, start, end)."""
    out: dict[str, dict[str, Any] | None] = {}
    for dag_id in dag_ids:
        data = client.request(
            "GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": 1}
        )
        runs = data.get("dag_runs", []) if data else []
        out[dag_id] = (
            {
                "run_id": runs[0]["dag_run_id"],
                "state": runs[0]["state"],
                "start_date": runs[0].get("start_date"),
                "end_date": runs[0].get("end_date"),
            }
            if runs
            else None
        )
    return out


def sla_misses(alerts_uri: str | None, limit: int = 10) -> dict[str, Any]:
    """SLA alerts on record: the count and the newest ``limit``."""
    if alerts_uri is None:
        return {"count": None, "recent": [], "note": "alerts_uri is null: not recorded"}
    misses = [a for a in list_alerts(alerts_uri) if a.get("kind") == "sla_miss"]
    misses.sort(key=lambda a: str(a.get("created")), reverse=True)
    return {
        "count": len(misses),
        "recent": [
            {k: a.get(k) for k in ("dag_id", "task_id", "run_id", "created", "summary")}
            for a in misses[:limit]
        ],
    }


def latest_predictions(latest_uri: str) -> dict[str, Any] | None:
    """The pointer the scoring DAG's ``publish`` task writes (None before the first run)."""
    try:
        data: dict[str, Any] = json.loads(S3Store().get_bytes(latest_uri))
    except NotFound:
        return None
    return {
        k: data.get(k)
        for k in ("uri", "rows", "error_rate", "fallback_count", "model_uri", "finished")
    }


def collect_status(cfg: PipelineConfig, client: AirflowClient | None) -> dict[str, Any]:
    """Everything ``rxvision status`` shows; each part says ``error`` instead of failing."""
    out: dict[str, Any] = {}
    parts = {
        "champion": champion_status,
        "dag_runs": lambda: (
            last_runs(client, [cfg.nightly.dag_id, cfg.scoring.dag_id]) if client else None
        ),
        "sla_misses": lambda: sla_misses(cfg.alerts_uri),
        "predictions": lambda: latest_predictions(cfg.scoring.latest_uri),
    }
    for name, get in parts.items():
        try:
            out[name] = get()
        except (RxVisionError, OSError, ValueError, KeyError) as exc:
            log.debug("status part %s failed", name, exc_info=True)
            out[name] = {"error": str(exc)}
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out
