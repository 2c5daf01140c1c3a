"""On-call alerts: one ``Alert``, sent to every sink once (log, statsd, webhook, a record).

Airflow callbacks deliver at least once (a restarted triggerer runs a deadline callback
again), so each alert has a dedupe key: its record in S3 is written after the webhook
accepted it, and an alert whose record exists is logged and not sent again.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
import statsd
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from rxvision.storage.s3 import S3Store, parse_s3_uri

log = logging.getLogger(__name__)

SEVERITIES = ("info", "warning", "error", "critical")


@dataclass(frozen=True)
class Alert:
    """What went wrong, where, and what on-call should do about it."""

    kind: str  # sla_miss | task_failed | not_promoted | ...
    dag_id: str
    run_id: str
    task_id: str
    summary: str
    severity: str = "error"
    details: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def dedupe_key(self) -> str:
        """Same failure of the same task in the same run: same key."""
        return f"{self.kind}:{self.dag_id}:{self.run_id}:{self.task_id}"

    def payload(self) -> dict[str, Any]:
        """The webhook body: Slack's ``text`` plus PagerDuty Events v2 fields."""
        return {
            "text": f"[{self.severity.upper()}] {self.dag_id}.{self.task_id}: {self.summary}",
            "event_action": "trigger",
            "dedup_key": self.dedupe_key,
            "payload": {
                "summary": self.summary,
                "severity": self.severity,
                "source": f"airflow/{self.dag_id}/{self.task_id}",
                "component": self.dag_id,
                "class": self.kind,
                "custom_details": {"run_id": self.run_id, **self.details},
            },
        }

    def to_json(self) -> dict[str, Any]:
        """The record kept for ``rxvision status``."""
        return {**asdict(self), "dedupe_key": self.dedupe_key}


def record_name(alert: Alert) -> str:
    """A safe object name for the alert's record."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", alert.dedupe_key) + ".json"


class WebhookError(Exception):
    """The webhook answered with a server error (retried)."""


@retry(
    retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout, WebhookError)),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.5, max=4),
    reraise=True,
)
def post_webhook(url: str, body: dict[str, Any], timeout_s: float = 10) -> int:
    """POST the JSON body; retry connection errors and 5xx; return the status code."""
    resp = requests.post(url, json=body, timeout=timeout_s)
    if resp.status_code >= 500:
        raise WebhookError(f"webhook answered {resp.status_code}")
    return resp.status_code


class AlertSinks:
    """Where alerts go. Each sink is optional; a failing sink never stops the others."""

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        statsd_host: str | None = None,
        statsd_port: int = 8125,
        prefix: str = "rxvision",
        records_uri: str | None = None,
        store: S3Store | None = None,
    ) -> None:
        self.webhook_url = webhook_url
        self.records_uri = records_uri.rstrip("/") if records_uri else None
        self._store = store
        self._statsd = (
            statsd.StatsClient(statsd_host, statsd_port, prefix=prefix) if statsd_host else None
        )

    @property
    def store(self) -> S3Store:
        """The S3 client for records (built on first use)."""
        if self._store is None:
            self._store = S3Store()
        return self._store

    def _record_uri(self, alert: Alert) -> str | None:
        return f"{self.records_uri}/{record_name(alert)}" if self.records_uri else None

    def already_sent(self, alert: Alert) -> bool:
        """Whether this alert's record exists (it was delivered before)."""
        uri = self._record_uri(alert)
        try:
            return bool(uri) and self.store.exists(str(uri))
        except Exception as exc:
            log.warning("cannot check alert record %s: %s", uri, exc)
            return False

    def send(self, alert: Alert) -> dict[str, str]:
        """Deliver ``alert`` to each sink once; return each sink's outcome."""
        log.error("ALERT %s %s: %s", alert.kind, alert.dedupe_key, alert.summary)
        if self.already_sent(alert):
            log.info("alert %s was already delivered: not sent again", alert.dedupe_key)
            return {"dedupe": "already sent"}
        outcome = {"log": "ok", "statsd": self._send_statsd(alert)}
        outcome["webhook"] = self._send_webhook(alert)
        outcome["record"] = self._write_record(alert, outcome)
        return outcome

    def _send_statsd(self, alert: Alert) -> str:
        if self._statsd is None:
            return "off"
        with self._statsd.pipeline() as pipe:
            pipe.incr(f"alerts.{alert.kind}")
            pipe.incr(f"alerts.{alert.kind}.{alert.dag_id}.{alert.task_id}")
        return "ok"

    def _send_webhook(self, alert: Alert) -> str:
        if not self.webhook_url:
            return "off"
        try:
            return str(post_webhook(self.webhook_url, alert.payload()))
        except Exception as exc:
            log.error("webhook failed for %s: %s", alert.dedupe_key, exc)
            return f"failed: {type(exc).__name__}"

    def _write_record(self, alert: Alert, outcome: dict[str, str]) -> str:
        uri = self._record_uri(alert)
        if uri is None:
            return "off"
        try:
            body = {**alert.to_json(), "delivery": outcome}
            self.store.put_bytes(uri, json.dumps(body, indent=2).encode())
            return "ok"
        except Exception as exc:
            log.error("cannot record alert %s at %s: %s", alert.dedupe_key, uri, exc)
            return f"failed: {type(exc).__name__}"


def list_alerts(records_uri: str, store: S3Store | None = None) -> Iterator[dict[str, Any]]:
    """Every recorded alert under ``records_uri``."""
    store = store or S3Store()
    bucket, _ = parse_s3_uri(records_uri)
    for key in store.list_keys(records_uri.rstrip("/") + "/"):
        if key.endswith(".json"):
            yield json.loads(store.get_bytes(f"s3://{bucket}/{key}"))
