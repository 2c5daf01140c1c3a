"""Alerts from Airflow: task failures, SLA misses, refused models (sinks in
``rxvision.pipeline.alerts``; the webhook URL from an Airflow connection)."""

from __future__ import annotations

import logging
import os
from typing import Any

from rxvision.pipeline.alerts import Alert, AlertSinks
from rxvision.pipeline.config import PipelineConfig, load_pipeline_config
from rxvision.pipeline.incidents import incidents_uri_for
from rxvision.pipeline.webhook import url_secrets
from rxvision_airflow.connections import s3_env, webhook_url

log = logging.getLogger(__name__)


def build_sinks(cfg: PipelineConfig) -> AlertSinks:
    """Log, statsd (``STATSD_HOST``/``STATSD_PORT``), the webhook connection, S3 records
    and incidents (the records' sibling prefix ``incidents/``)."""
    from rxvision.storage.s3 import S3Config, S3Store

    env = s3_env(cfg.connections.s3)
    store = None
    if env:
        store = S3Store(
            S3Config(
                endpoint_url=env.get("AWS_ENDPOINT_URL_S3"),
                access_key=env.get("AWS_ACCESS_KEY_ID"),
                secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
                region=env.get("AWS_DEFAULT_REGION", "us-east-1"),
            )
        )
    url = webhook_url(cfg.connections.alerts)
    if url:
        _mask(url)
    return AlertSinks(
        webhook_url=url,
        statsd_host=os.environ.get("STATSD_HOST"),
        statsd_port=int(os.environ.get("STATSD_PORT") or 8125),
        prefix=cfg.statsd_prefix,
        records_uri=cfg.alerts_uri,
        store=store,
        incidents_uri=incidents_uri_for(cfg.alerts_uri),
    )


def _mask(url: str) -> None:
    """Have Airflow's secrets masker hide the webhook URL and its path in every log of
    this process (a Slack webhook's path is its token)."""
    try:
        from airflow.sdk.log import mask_secret

        for secret in url_secrets(url):
            mask_secret(secret)
    except Exception as exc:  # masking is a second line of defence: never fail on it
        log.debug("cannot register the webhook URL with the secrets masker: %s", type(exc).__name__)


def send(alert: Alert, cfg: PipelineConfig | None = None) -> dict[str, str]:
    """Deliver one alert (never raises: an alerting failure must not fail a task)."""
    try:
        return build_sinks(cfg or load_pipeline_config()).send(alert)
    except Exception:
        log.exception("could not deliver alert %s", alert.dedupe_key)
        return {"error": "not delivered"}


def resolve_after_success(
    dag_id: str,
    task_id: str,
    map_index: int | None,
    run_id: str,
    note: str,
    cfg: PipelineConfig | None = None,
) -> list[str]:
    """Close the incidents a task's success within its budget resolves, telling the
    webhook; the ids (never raises: it runs in the listener of a task that succeeded)."""
    try:
        sinks = build_sinks(cfg or load_pipeline_config())
        return sinks.resolve_incidents(dag_id, task_id, map_index, run_id, note)
    except Exception:
        log.exception("could not auto-resolve the incidents of %s.%s", dag_id, task_id)
        return []


def report_circuit(
    published: dict[str, Any], dag_id: str, run_id: str, cfg: PipelineConfig | None = None
) -> dict[str, Any]:
    """The scoring run's breaker switches as an incident (``rxvision.pipeline.
    circuit_incidents``); what was done (never raises: the predictions are published)."""
    from rxvision.pipeline.circuit_incidents import report_circuit as report

    try:
        sinks = build_sinks(cfg or load_pipeline_config())
        events = list(published.get("circuit_events") or [])
        return report(events, dag_id, run_id, sinks, model_uri=published.get("model_uri"))
    except Exception:
        log.exception("could not report the circuit switches of %s %s", dag_id, run_id)
        return {"error": "not reported"}


def on_task_failure(context: dict[str, Any]) -> None:
    """``on_failure_callback`` of every task: page on-call with the error and the log."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    error = context.get("exception")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        task_id = f"{task_id}[{map_index}]"
    run_id = getattr(ti, "run_id", None) or getattr(dag_run, "run_id", "?")
    try_number = getattr(ti, "try_number", None)
    send(
        Alert(
            kind="task_failed",
            dag_id=str(dag_id),
            run_id=str(run_id),
            task_id=str(task_id),
            summary=f"{task_id} failed after {try_number or '?'} tries: {error}",
            severity="error",
            # a task cleared and failing again is a new try: it must page again
            try_number=try_number if isinstance(try_number, int) else None,
            details={"log_url": getattr(ti, "log_url", None), "error": str(error)[:2000]},
        )
    )
