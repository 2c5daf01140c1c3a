"""``rxvision status``: the champion, each DAG's last run, SLA misses, open incidents,
latest predictions."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from rxvision.errors import NotFound, RxVisionError
from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.alerts import list_alerts
from rxvision.pipeline.config import PipelineConfig
from rxvision.pipeline.incident_store import IncidentStore
from rxvision.pipeline.incidents import incidents_uri_for
from rxvision.serving.int8_record import int8_judgement
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
    from rxvision.registry.config import load_registry_config
    from rxvision.registry.model_registry import ModelRegistry

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
        "int8": int8_judgement(champion.tags),
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


def sla_misses(
    alerts_uri: str | None, limit: int = 10, alerts: Iterable[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """SLA alerts on record (``alerts``, else those under ``alerts_uri``): the count and
    the newest ``limit``."""
    if alerts_uri is None:
        return {"count": None, "recent": [], "note": "alerts_uri is null: not recorded"}
    records = list_alerts(alerts_uri) if alerts is None else alerts
    misses = [a for a in records if a.get("kind") == "sla_miss"]
    misses.sort(key=lambda a: str(a.get("created")), reverse=True)
    return {
        "count": len(misses),
        "recent": [
            {k: a.get(k) for k in ("dag_id", "task_id", "run_id", "created", "summary")}
            for a in misses[:limit]
        ],
    }


NOT_PROMOTED = "not_promoted"
NOT_PROMOTED_STATE = "not promoted"
REGISTER_TASK = "register"
# the nightly's first task skips the whole run when the champion already trained on the
# snapshot: a success with nothing done, not a refusal
RESOLVE_TASK = "resolve_snapshot"
NOTHING_NEW_STATE = "nothing new"
NOTHING_NEW_REASON = (
    "the champion already trained on this snapshot (resolve_snapshot skipped the run; "
    "trigger with force_retrain=true to retrain)"
)
GATES_SAID = "refused by the production gates: "


def failed_gates(summary: str) -> str:
    """The failed gates of a not_promoted alert's summary (``min_top1: 0.62 (needs >=
    0.80) FAILED; ...``), else the summary itself."""
    _, found, gates = summary.partition(GATES_SAID)
    return gates if found else summary


def refusal_of(
    run: dict[str, Any], dag_id: str, alerts: Iterable[dict[str, Any]]
) -> dict[str, Any] | None:
    """The newest not_promoted alert of this DAG run (None: the model was not refused)."""
    mine = [
        a
        for a in alerts
        if a.get("kind") == NOT_PROMOTED
        and a.get("dag_id") == dag_id
        and a.get("run_id") == run.get("run_id")
    ]
    return max(mine, key=lambda a: str(a.get("created"))) if mine else None


def task_instance(client: AirflowClient, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    """One task instance of the run, as the REST API gives it ({} when it has none)."""
    path = (
        f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
        f"/taskInstances/{quote(task_id, safe='')}"
    )
    data = client.request("GET", path)
    return data if isinstance(data, dict) else {}


def mark_outcome(
    run: dict[str, Any] | None,
    dag_id: str,
    alerts: Iterable[dict[str, Any]],
    client: AirflowClient | None,
) -> None:
    """Say what a successful nightly run did when Airflow's "success" hides it.

    A model the gates refused: its ``register`` is skipped with a not_promoted alert;
    ``outcome`` becomes "not promoted" and ``failed_gates`` names the gates (from the
    alert). A night with nothing to train (``resolve_snapshot`` skipped, and every task
    after it): ``outcome`` "nothing new" and ``reason`` says why."""
    if not run or run.get("state") != "success":
        return
    alert = refusal_of(run, dag_id, alerts)
    if alert is not None:
        run["outcome"] = NOT_PROMOTED_STATE
        run["failed_gates"] = failed_gates(str(alert.get("summary", "")))
        return
    if client is None:
        return
    try:
        tasks = {
            task_id: task_instance(client, dag_id, str(run["run_id"]), task_id)
            for task_id in (RESOLVE_TASK, REGISTER_TASK)
        }
    except (RxVisionError, OSError, ValueError) as exc:
        log.debug("cannot read the tasks of %s: %s", run.get("run_id"), exc)
        return
    resolve = tasks[RESOLVE_TASK]
    # skipped by its own run (a try), not by a person marking the run by hand (no try)
    if resolve.get("state") == "skipped" and int(resolve.get("try_number") or 0) >= 1:
        run["outcome"] = NOTHING_NEW_STATE
        run["reason"] = NOTHING_NEW_REASON
    elif tasks[REGISTER_TASK].get("state") == "skipped":
        # refused with no alert on record (alerts_uri null, or the record failed)
        run["outcome"] = NOT_PROMOTED_STATE
        run["failed_gates"] = "unknown: register was skipped and no not_promoted alert is on record"


def open_incidents(alerts_uri: str | None, store: S3Store | None = None) -> dict[str, Any]:
    """Unresolved incidents (open or acked): the count and each one's summary, oldest
    first (``rxvision incidents show ID`` has the history)."""
    uri = incidents_uri_for(alerts_uri)
    if uri is None:
        return {"count": None, "open": [], "note": "alerts_uri is null: no incidents kept"}
    keys = ("id", "state", "kind", "dag_id", "task_id", "run_id", "opened", "acked_by")
    found = IncidentStore(uri, store).unresolved()
    return {"count": len(found), "open": [{k: i.get(k) for k in keys} for i in found]}


def latest_predictions(latest_uri: str) -> dict[str, Any] | None:
    """The pointer the scoring DAG's ``publish`` task writes (None before the first run)."""
    store = S3Store()
    try:
        data: dict[str, Any] = json.loads(store.get_bytes(latest_uri))
    except NotFound:
        return None
    keys = ("uri", "rows", "error_rate", "fallback_count", "model_uri", "finished")
    # the review gallery of that run (rxvision.serving.review_gallery): where on-call and
    # the pharmacist open it; null for a run published before galleries existed
    gallery = ("review_uri", "needs_review")
    out = {k: data.get(k) for k in (*keys, *gallery)}
    review = str(out["review_uri"] or "")
    out["review_url"] = store.presigned_get(review) if review.startswith("s3://") else None
    return out


def collect_status(cfg: PipelineConfig, client: AirflowClient | None) -> dict[str, Any]:
    """Everything ``rxvision status`` shows; each part says ``error`` instead of failing."""
    out: dict[str, Any] = {}
    alerts = _alert_records(cfg.alerts_uri)

    def dag_runs() -> dict[str, dict[str, Any] | None] | None:
        if client is None:
            return None
        runs = last_runs(client, [cfg.nightly.dag_id, cfg.scoring.dag_id])
        nightly = cfg.nightly.dag_id
        try:
            records = alerts()
        except Exception as exc:  # the alerts part says so; the runs still show
            log.debug("alerts unreadable: %s", exc)
            records = []
        mark_outcome(runs.get(nightly), nightly, records, client)
        return runs

    parts: dict[str, Callable[[], Any]] = {
        "champion": champion_status,
        "dag_runs": dag_runs,
        "sla_misses": lambda: sla_misses(
            cfg.alerts_uri, alerts=alerts() if cfg.alerts_uri else None
        ),
        "incidents": lambda: open_incidents(cfg.alerts_uri),
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


def _alert_records(alerts_uri: str | None) -> Callable[[], list[dict[str, Any]]]:
    """The alert records, read once when first asked (status shows them twice)."""
    cache: list[list[dict[str, Any]]] = []

    def read() -> list[dict[str, Any]]:
        if not cache:
            cache.append(list(list_alerts(alerts_uri)) if alerts_uri else [])
        return cache[0]

    return read
