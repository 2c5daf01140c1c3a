"""Per-task SLAs on Airflow 3's DAG-level Deadline Alerts.

Airflow 3 dropped task SLAs. Each DAG carries one ``DeadlineAlert`` per task, named
``task_sla:<task_id>``, due at the run's queued time plus the task's cumulative budget
(its own budget and those of the tasks before it). When it comes due, the triggerer runs
``task_sla_callback``, which alerts only if that task has not finished. A task that
fails is the failure callback's business, not an SLA miss.

Deadlines count from the queued time, and a run waiting behind another one
(``max_active_runs=1``) stays ``queued``: its work has not begun, so its deadlines do not
page (the callback logs that the run is still queued). A run that started but whose task
has not still pages.

This module must stay importable by the triggerer (no DAG-file functions).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from rxvision.pipeline.alerts import Alert
from rxvision.pipeline.config import DagSettings, PipelineConfig

log = logging.getLogger(__name__)

CALLBACK = "rxvision_airflow.sla.task_sla_callback"
DONE = frozenset({"success", "skipped"})
FAILED = frozenset({"failed", "upstream_failed", "removed"})
QUEUED = "queued"


def task_deadline_alerts(settings: DagSettings) -> list[DeadlineAlert]:
    """One deadline per task of ``settings`` (in config order)."""
    alerts = []
    for task_id, due in settings.cumulative_budgets().items():
        alerts.append(
            DeadlineAlert(
                reference=DeadlineReference.DAGRUN_QUEUED_AT,
                interval=due,
                callback=AsyncCallback(
                    CALLBACK,
                    kwargs={
                        "dag_id": settings.dag_id,
                        "task_id": task_id,
                        "budget_s": settings.sla_s[task_id],
                        "due_s": due.total_seconds(),
                    },
                ),
                name=f"task_sla:{task_id}",
            )
        )
    return alerts


def states_of(task_states: dict[str, Any], task_id: str) -> list[str]:
    """The states of ``task_id``'s instances (mapped ones are ``<task_id>_<index>``)."""
    out = []
    for key, state in task_states.items():
        suffix = key[len(task_id) + 1 :] if key.startswith(f"{task_id}_") else None
        if key == task_id or (suffix is not None and suffix.isdigit()):
            out.append(str(state) if state is not None else "none")
    return out


def sla_verdict(states: list[str], run_queued: bool = False) -> str:
    """``finished`` (no alert), ``failed`` (the failure callback alerts), ``queued`` (the
    run has not started: no alert) or ``late`` (alert)."""
    if states and all(s in DONE for s in states):
        return "finished"
    if any(s in FAILED for s in states):
        return "failed"
    if run_queued:
        return "queued"
    return "late"


def _state_name(state: Any) -> str | None:
    # a DagRunState enum from the Task SDK, or its value from the JSON context
    value = getattr(state, "value", state)
    return str(value) if value is not None else None


def run_was_queued(live_state: Any, dag_run: Any) -> bool:
    """Whether the run had not started: ``queued`` now (``live_state``, from Airflow) or
    when the scheduler found the deadline missed (the ``state`` of the context's
    ``dag_run``: a DAGRunResponse snapshot taken then, the same on every redelivery).
    Either way its budget, counted from the queued time, was spent waiting. Unknown
    states count as started: when in doubt, page."""
    snapshot = dag_run.get("state") if isinstance(dag_run, dict) else None
    return QUEUED in {_state_name(live_state), _state_name(snapshot)}


def _dag_run_id(context: dict[str, Any] | None) -> str | None:
    # the scheduler sends the run as the REST API's DAGRunResponse: ``dag_run_id``
    dag_run = (context or {}).get("dag_run") or {}
    if isinstance(dag_run, dict):
        return dag_run.get("dag_run_id") or dag_run.get("run_id")
    return getattr(dag_run, "run_id", None)


def _task_states(dag_id: str, run_id: str) -> dict[str, Any]:
    # The Task SDK's supervisor channel answers this in the triggerer (the ORM is blocked).
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id])
    return dict(states.get(run_id, {}))


def _dag_run_state(dag_id: str, run_id: str) -> str:
    # Answered by the triggerer's supervisor (GetDagRunState), like the task states.
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    return RuntimeTaskInstance.get_dagrun_state(dag_id=dag_id, run_id=run_id)


async def task_sla_callback(
    dag_id: str,
    task_id: str,
    budget_s: float,
    due_s: float,
    context: dict[str, Any] | None = None,
    **_: Any,
) -> str:
    """Alert (log, statsd, webhook, record) if ``task_id`` has not finished by its deadline.

    Returns a short string (the triggerer stores it; a dict would crash it).
    """
    from rxvision_airflow.alerting import send

    run_id = _dag_run_id(context) or "unknown"
    try:
        states = states_of(_task_states(dag_id, run_id), task_id)
    except Exception as exc:
        log.warning("cannot read task states of %s/%s: %s", dag_id, run_id, exc)
        states = []
    try:
        live_state: str | None = _dag_run_state(dag_id, run_id)
    except Exception as exc:
        log.warning("cannot read the state of run %s/%s: %s", dag_id, run_id, exc)
        live_state = None
    dag_run = (context or {}).get("dag_run")
    verdict = sla_verdict(states, run_was_queued(live_state, dag_run))
    if verdict == "queued":
        log.info(
            "SLA of %s.%s (%s): the run is still queued behind another run (max_active_runs),"
            " so its %s budget counted from the queued time ran out before it started; no alert",
            dag_id,
            task_id,
            run_id,
            timedelta(seconds=due_s),
        )
        return f"{task_id}: run still queued, no alert"
    if verdict != "late":
        log.info("SLA of %s.%s (%s): %s, no alert", dag_id, task_id, run_id, verdict)
        return f"{task_id}: {verdict}"
    alert = Alert(
        kind="sla_miss",
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        summary=(
            f"{task_id} not finished {timedelta(seconds=due_s)} after the run was queued "
            f"(its own budget {timedelta(seconds=budget_s)}); states: {states or ['not started']}"
        ),
        severity="warning",
        details={"budget_s": budget_s, "due_s": due_s, "states": states},
    )
    # connections are read here, on the triggerer's loop; the sending runs in a thread
    from rxvision.pipeline.config import load_pipeline_config
    from rxvision_airflow.alerting import build_sinks

    try:
        sinks = build_sinks(load_pipeline_config())
        outcome = await asyncio.to_thread(sinks.send, alert)
    except Exception:
        log.exception("SLA alert for %s failed; trying the plain path", alert.dedupe_key)
        outcome = send(alert)
    return f"{task_id}: late, alert {outcome}"


def task_limits(cfg: PipelineConfig, settings: DagSettings, task_id: str) -> dict[str, Any]:
    """Per-task operator arguments: the hard limit (``execution_timeout``)."""
    return {"execution_timeout": cfg.hard_limit(settings.budget(task_id))}


def default_args(cfg: PipelineConfig) -> dict[str, Any]:
    """Owner, retries with exponential backoff and the failure alert, for every task."""
    from rxvision_airflow.alerting import on_task_failure

    r = cfg.retries
    return {
        "owner": cfg.owner,
        "retries": r.count,
        "retry_delay": timedelta(seconds=r.delay_s),
        "retry_exponential_backoff": r.exponential_backoff,
        "max_retry_delay": timedelta(seconds=r.max_delay_s),
        "on_failure_callback": on_task_failure,
    }
