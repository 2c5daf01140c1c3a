"""On-call alerts: one ``Alert``, sent to every sink once (log, statsd, webhook, a record).

Airflow callbacks deliver at least once (a restarted triggerer runs a deadline callback
again), so each alert has a dedupe key: its record in S3 is written only after the webhook
accepted it (a 2xx), and an alert whose record exists is logged and not sent again. An
alert the webhook did not accept leaves no record, so its redelivery pages again.

A webhook URL is a secret (a Slack URL's path is its token): it is never logged, and
neither are ``requests``' exception messages, which embed it. Logs name the exception
type, the status code and the URL's ``scheme://host:port`` only (``rxvision.pipeline.webhook``).

With ``incidents_uri``, every alert sent is also an event on its incident
(``rxvision.pipeline.incidents``: opened, repeat, reopened), and the gauge
``<prefix>.incidents.open`` says how many are unresolved. ``resolve_incidents`` closes
those a task's success resolves and tells the webhook (``event_action: resolve`` with each
dedup key the incident paged with). The incident store failing never fails a send.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import statsd

from rxvision.pipeline.webhook import REDACT, WebhookError, post_webhook, url_origin
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
    # set for task failures: a task cleared and failing again is a new page
    try_number: int | None = None

    @property
    def dedupe_key(self) -> str:
        """Same failure of the same task (and try, when known) in the same run: same key."""
        key = f"{self.kind}:{self.dag_id}:{self.run_id}:{self.task_id}"
        return key if self.try_number is None else f"{key}:try{self.try_number}"

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
    """A safe object name for the alert's record.

    The readable part maps every unsafe character to ``_``; the digest of the exact key
    keeps two keys that differ only there (``a[3]`` and ``a_3_``) apart, since a
    collision would suppress a page.
    """
    key = alert.dedupe_key
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:200]
    return f"{safe}.{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


# the gauge of unresolved incidents (under the prefix: rxvision.incidents.open)
OPEN_GAUGE = "incidents.open"


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
        incidents_uri: str | None = None,
    ) -> None:
        self.webhook_url = webhook_url
        if webhook_url:
            REDACT.add(webhook_url)
        self.records_uri = records_uri.rstrip("/") if records_uri else None
        self._store = store
        self.incidents_uri = incidents_uri.rstrip("/") if incidents_uri else None
        self._statsd_addr = (statsd_host, statsd_port) if statsd_host else None
        self._prefix = prefix
        self._statsd: statsd.StatsClient | None = None

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
        """Deliver ``alert`` to each sink once; return each sink's outcome.

        The record (the dedupe marker) is written only when the webhook answered 2xx or
        none is configured: an alert it did not accept is paged again on redelivery.
        """
        log.error("ALERT %s %s: %s", alert.kind, alert.dedupe_key, alert.summary)
        if self.already_sent(alert):
            log.info("alert %s was already delivered: not sent again", alert.dedupe_key)
            return {"dedupe": "already sent"}
        outcome = {"log": "ok", "statsd": self._send_statsd(alert)}
        outcome["webhook"], delivered = self._send_webhook(alert)
        if delivered:
            outcome["record"] = self._write_record(alert, outcome)
        else:
            outcome["record"] = "not written: webhook did not accept the alert"
        if self.incidents_uri:  # no key at all without incidents (the outcome stays as it was)
            outcome["incident"] = self._record_incident(alert, dict(outcome))
        return outcome

    def incidents(self) -> Any:
        """The incident store (an ``IncidentStore``; None without ``incidents_uri``)."""
        from rxvision.pipeline.incident_store import IncidentStore

        return IncidentStore(self.incidents_uri, self.store) if self.incidents_uri else None

    def _record_incident(self, alert: Alert, delivery: dict[str, str]) -> str:
        """Add the alert to its incident; the outcome (never raises: the page went out)."""
        store = self.incidents()
        if store is None:
            return "off"
        try:
            incident = store.record_alert(alert, delivery)
        except Exception as exc:
            log.error(
                "cannot record alert %s on its incident under %s: %s: %s",
                alert.dedupe_key,
                self.incidents_uri,
                type(exc).__name__,
                exc,
            )
            return f"failed: {type(exc).__name__}"
        event = incident["events"][-1]["type"]
        if event in ("opened", "reopened"):
            self.send_open_gauge()
        return f"{event} {incident['id']}"

    def send_open_gauge(self) -> str:
        """Set ``<prefix>.incidents.open`` to the number of unresolved incidents."""
        store = self.incidents()
        if store is None or self._statsd_addr is None:
            return "off"
        try:
            count = len(store.unresolved())
            self._client().gauge(OPEN_GAUGE, count)
        except Exception as exc:
            log.error("cannot send the open incidents gauge: %s", type(exc).__name__)
            return f"failed: {type(exc).__name__}"
        return str(count)

    def _client(self) -> statsd.StatsClient:
        if self._statsd is None:  # resolves the host: may fail, like any send
            assert self._statsd_addr is not None
            self._statsd = statsd.StatsClient(*self._statsd_addr, prefix=self._prefix)
        return self._statsd

    def resolve_incidents(
        self, dag_id: str, task_id: str, map_index: int | None, run_id: str, note: str
    ) -> list[str]:
        """Resolve the incidents a success of the task closes, tell the webhook of each
        and refresh the gauge; return the ids resolved (never raises)."""
        store = self.incidents()
        if store is None:
            return []
        try:
            resolved = store.auto_resolve(dag_id, task_id, map_index, run_id, note)
        except Exception as exc:
            log.error(
                "cannot auto-resolve incidents of %s.%s under %s: %s: %s",
                dag_id,
                task_id,
                self.incidents_uri,
                type(exc).__name__,
                exc,
            )
            return []
        for incident in resolved:
            log.info("incident %s resolved: %s", incident["id"], note)
            self.notify_resolved(incident)
        if resolved:
            self.send_open_gauge()
        return [i["id"] for i in resolved]

    def notify_resolved(self, incident: dict[str, Any]) -> dict[str, str]:
        """Post ``event_action: resolve`` for each dedup key the incident paged with (the
        trigger's key: PagerDuty closes the page it opened) and note the outcome on the
        incident; each key's outcome."""
        from rxvision.pipeline.incidents import resolve_payload

        outcome: dict[str, str] = {}
        for key in incident.get("dedup_keys", []):
            if not self.webhook_url:
                outcome[key] = "off"
                continue
            try:
                status = post_webhook(self.webhook_url, resolve_payload(incident, key))
                outcome[key] = str(status) if 200 <= status < 300 else f"refused: HTTP {status}"
            except WebhookError as exc:
                outcome[key] = f"failed: WebhookError {exc.status}"
            except Exception as exc:  # its message embeds the URL: only the type is kept
                outcome[key] = f"failed: {type(exc).__name__}"
            if not outcome[key].isdigit():
                log.error(
                    "webhook at %s did not take the resolve of %s: %s",
                    url_origin(self.webhook_url),
                    key,
                    outcome[key],
                )
        store = self.incidents()
        if store is not None and outcome:
            try:
                store.note(incident["id"], "notified", action="resolve", webhook=outcome)
            except Exception as exc:
                log.error("cannot note the resolve on %s: %s", incident["id"], type(exc).__name__)
        return outcome

    def _send_statsd(self, alert: Alert) -> str:
        if self._statsd_addr is None:
            return "off"
        try:
            with self._client().pipeline() as pipe:
                pipe.incr(f"alerts.{alert.kind}")
                pipe.incr(f"alerts.{alert.kind}.{alert.dag_id}.{alert.task_id}")
        except Exception as exc:
            log.error("statsd failed for %s: %s", alert.dedupe_key, type(exc).__name__)
            return f"failed: {type(exc).__name__}"
        return "ok"

    def _send_webhook(self, alert: Alert) -> tuple[str, bool]:
        """The webhook's outcome and whether it accepted the alert (a 2xx, or no webhook)."""
        if not self.webhook_url:
            return "off", True
        origin = url_origin(self.webhook_url)
        try:
            status = post_webhook(self.webhook_url, alert.payload())
        except WebhookError as exc:
            log.error(
                "webhook at %s failed for %s: HTTP %d after retries; not recorded, a "
                "redelivery pages again",
                origin,
                alert.dedupe_key,
                exc.status,
            )
            return f"failed: WebhookError {exc.status}", False
        except Exception as exc:
            # the message of a requests exception embeds the URL: only its type is logged
            log.error(
                "webhook at %s failed for %s: %s; not recorded, a redelivery pages again",
                origin,
                alert.dedupe_key,
                type(exc).__name__,
            )
            return f"failed: {type(exc).__name__}", False
        if 200 <= status < 300:
            return str(status), True
        log.error(
            "webhook at %s refused %s: HTTP %d, a permanent failure (check the alerts "
            "connection's URL); not recorded as delivered",
            origin,
            alert.dedupe_key,
            status,
        )
        return f"refused: HTTP {status}", False

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
