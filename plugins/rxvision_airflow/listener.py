"""A listener that times every RxVision task against its SLA budget.

It runs in the task's process when the task ends: a statsd timer
``<prefix>.task.duration.<dag>.<task>`` and, over budget, the counter
``<prefix>.task.sla_miss.<dag>.<task>``. It cannot see a hung task; the deadline
callbacks in ``rxvision_airflow.sla`` do.

A success within the budget (or of a task with none) resolves the task's open incidents
of failures and SLA misses (``rxvision.pipeline.incidents``), and the webhook gets a
resolve event for each page they sent.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from functools import cache
from typing import Any

from airflow.listeners import hookimpl

from rxvision.pipeline.config import DagSettings, load_pipeline_config

log = logging.getLogger(__name__)


@cache
def _settings() -> tuple[str, dict[str, DagSettings]]:
    cfg = load_pipeline_config()
    return cfg.statsd_prefix, {s.dag_id: s for s in cfg.dags()}


def record_duration(dag_id: str, task_id: str, seconds: float, outcome: str) -> bool:
    """Send the task's duration; return whether it was over its budget."""
    import statsd

    prefix, dags = _settings()
    settings = dags.get(dag_id)
    budget = settings.sla_s.get(task_id) if settings else None
    over = budget is not None and seconds > budget
    host = os.environ.get("STATSD_HOST")
    if host:
        client = statsd.StatsClient(host, int(os.environ.get("STATSD_PORT") or 8125), prefix=prefix)
        with client.pipeline() as pipe:
            pipe.timing(f"task.duration.{dag_id}.{task_id}", seconds * 1000)
            pipe.incr(f"task.{outcome}.{dag_id}.{task_id}")
            if over:
                pipe.incr(f"task.sla_miss.{dag_id}.{task_id}")
                pipe.incr("task.sla_miss")
    if over:
        log.warning("%s.%s took %.1f s, over its %.0f s budget", dag_id, task_id, seconds, budget)
    return over


def budget_of(dag_id: str, task_id: str) -> float | None:
    """The task's SLA budget in seconds (None: it has none)."""
    _, dags = _settings()
    settings = dags.get(dag_id)
    return settings.sla_s.get(task_id) if settings else None


def resolve_note(task_id: str, run_id: str, seconds: float, budget: float | None) -> str:
    """How an incident resolved itself, for its history and the webhook."""
    within = f"within its {budget:.0f} s budget" if budget is not None else "(no budget)"
    return f"{task_id} succeeded in {run_id} in {seconds:.0f} s {within}"


def _finished(task_instance: Any, outcome: str) -> None:
    try:
        started = getattr(task_instance, "start_date", None)
        if started is None:
            return
        seconds = (datetime.now(UTC) - started).total_seconds()
        dag_id, task_id = task_instance.dag_id, task_instance.task_id
        over = record_duration(dag_id, task_id, seconds, outcome)
    except Exception:
        log.exception("could not record the task's duration")
        return
    if outcome == "success" and not over:
        _resolve(task_instance, seconds)


def _resolve(task_instance: Any, seconds: float) -> None:
    from rxvision_airflow.alerting import resolve_after_success

    dag_id, task_id = task_instance.dag_id, task_instance.task_id
    run_id = str(getattr(task_instance, "run_id", "?"))
    map_index = getattr(task_instance, "map_index", None)
    note = resolve_note(task_id, run_id, seconds, budget_of(dag_id, task_id))
    resolve_after_success(
        dag_id, task_id, map_index if isinstance(map_index, int) else None, run_id, note
    )


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    """Time a task that succeeded."""
    _finished(task_instance, "success")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    """Time a task that failed."""
    _finished(task_instance, "failed")
