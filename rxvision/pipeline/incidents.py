"""Incidents: the alerts of one problem, with a history on-call can see, ack and close.

**The incident key** is ``kind:dag_id:run_id:task_id``: the alert's dedupe key without the
try number. A task that fails on try 1, 2 and 3 pages three times (each try has its own
dedupe key, so a cleared task pages again) but is one problem of one task in one run: one
incident, opened once and repeated twice. A later run failing the same task is another
incident (another run_id): each has its own history and auto-resolve closes both.

**States**: ``open`` (paged, nobody on it), ``acked`` (someone took it: by whom, when),
``resolved`` (how: a note, by a person or by a later success). A new alert on an acked
incident keeps it acked (a repeat); on a resolved one it reopens it.

**Auto-resolve**: a task failure or an SLA miss resolves itself when that task next
succeeds within its budget. A failure is resolved by any such success, a retry in the same
run included (the failing try's problem is gone). An SLA miss only by a success in another
run: the late task of the same run finishing is still late.

**Storage** (:mod:`rxvision.pipeline.incident_store`): one JSON object per incident,
``<incidents_uri>/<id>.json``, changed only by a read-modify-write with a conditional PUT
(``If-None-Match: *`` to create, ``If-Match`` on the ETag read to update). A writer that
loses the race (HTTP 412, or 409 for a concurrent conditional request) reads again and
reapplies its change, so two callbacks racing never lose an event. Each event carries an
id and is applied at most once, so a PUT that landed but whose answer was lost is not
appended twice on the retry.

The id is readable and stable: ``<dag>.<task>.<kind>.<hash of the key>``. Stable, so two
callbacks opening the same incident race on one object; dag and task first, so the
listener finds a task's incidents with one prefix listing.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rxvision.pipeline.alerts import Alert
from rxvision.storage.s3 import parse_s3_uri

STATES = ("open", "acked", "resolved")
UNRESOLVED = frozenset({"open", "acked"})
# the kinds a later success of the task resolves
AUTO_RESOLVED_KINDS = frozenset({"task_failed", "sla_miss"})
AUTO_RESOLVER = "rxvision (auto-resolve)"


def now() -> str:
    """The current UTC time, to the second (as alerts say it)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def incident_key(alert: Alert) -> str:
    """``kind:dag_id:run_id:task_id``: the alert's dedupe key without the try number."""
    return f"{alert.kind}:{alert.dag_id}:{alert.run_id}:{alert.task_id}"


def _safe(text: str, limit: int = 100) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:limit]


def task_prefix(dag_id: str, task_id: str) -> str:
    """The start of the ids of ``task_id``'s incidents (and of any task id that extends
    it: callers compare the fields they read)."""
    return f"{_safe(dag_id)}.{_safe(task_id)}"


def incident_id(alert: Alert) -> str:
    """``<dag>.<task>.<kind>.<hash>``: readable, a safe object name, the same for every
    alert of the incident (the hash of the exact key keeps keys that differ only in
    unsafe characters apart)."""
    key = incident_key(alert)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{task_prefix(alert.dag_id, alert.task_id)}.{_safe(alert.kind, 40)}.{digest}"


def incidents_uri_for(alerts_uri: str | None) -> str | None:
    """The sibling ``incidents`` prefix of the alert records' prefix
    (``s3://b/alerts`` -> ``s3://b/incidents``); None when alerts are not recorded."""
    if not alerts_uri:
        return None
    bucket, key = parse_s3_uri(alerts_uri.rstrip("/"))
    parent = key.rpartition("/")[0]
    return f"s3://{bucket}/{parent}/incidents" if parent else f"s3://{bucket}/incidents"


# ---- the state machine (pure: dicts in, changed copies out) --------------------------


def _event(event_id: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"id": event_id, "type": kind, "at": now(), **fields}


def _has_event(incident: dict[str, Any], event_id: str) -> bool:
    return any(e.get("id") == event_id for e in incident.get("events", []))


def new_incident(alert: Alert) -> dict[str, Any]:
    """An incident for ``alert`` with no events yet (``apply_alert`` opens it)."""
    return {
        "id": incident_id(alert),
        "key": incident_key(alert),
        "kind": alert.kind,
        "dag_id": alert.dag_id,
        "run_id": alert.run_id,
        "task_id": alert.task_id,
        "severity": alert.severity,
        "summary": alert.summary,
        "state": "open",
        "opened": None,
        "updated": None,
        "acked_by": None,
        "acked_at": None,
        "resolved_at": None,
        "resolved_by": None,
        "resolution": None,
        "dedup_keys": [],
        "events": [],
    }


def apply_alert(
    incident: dict[str, Any] | None, alert: Alert, event_id: str, delivery: dict[str, str]
) -> dict[str, Any] | None:
    """The incident with ``alert`` recorded: ``opened`` (the first), ``repeat``, or
    ``reopened`` (a resolved incident alerting again). None when already applied."""
    inc = copy.deepcopy(incident) if incident else new_incident(alert)
    if _has_event(inc, event_id):
        return None
    if not inc["events"]:
        kind = "opened"
        inc["opened"] = alert.created
    elif inc["state"] == "resolved":
        kind = "reopened"
        inc["state"] = "open"
        inc.update(acked_by=None, acked_at=None, resolved_at=None, resolved_by=None)
        inc["resolution"] = None
    else:
        kind = "repeat"  # an acked incident stays acked
    inc["events"].append(
        _event(
            event_id,
            kind,
            alert_key=alert.dedupe_key,
            try_number=alert.try_number,
            summary=alert.summary,
            delivery=delivery,
        )
    )
    if alert.dedupe_key not in inc["dedup_keys"]:
        inc["dedup_keys"].append(alert.dedupe_key)
    inc["summary"] = alert.summary
    inc["updated"] = inc["events"][-1]["at"]
    return inc


def apply_ack(incident: dict[str, Any], by: str, event_id: str) -> dict[str, Any] | None:
    """The incident acknowledged by ``by``; None when there is nothing to change (already
    applied, or resolved: a resolved incident is not acknowledged)."""
    if _has_event(incident, event_id) or incident["state"] == "resolved":
        return None
    inc = copy.deepcopy(incident)
    inc["events"].append(_event(event_id, "acked", by=by))
    inc.update(state="acked", acked_by=by, acked_at=inc["events"][-1]["at"])
    inc["updated"] = inc["acked_at"]
    return inc


def apply_resolve(
    incident: dict[str, Any], note: str, by: str, event_id: str, **fields: Any
) -> dict[str, Any] | None:
    """The incident resolved (how: ``note``, by ``by``); None when already resolved."""
    if _has_event(incident, event_id) or incident["state"] == "resolved":
        return None
    inc = copy.deepcopy(incident)
    inc["events"].append(_event(event_id, "resolved", by=by, note=note, **fields))
    at = inc["events"][-1]["at"]
    inc.update(state="resolved", resolved_at=at, resolved_by=by, resolution=note, updated=at)
    return inc


def apply_note(
    incident: dict[str, Any], kind: str, event_id: str, **fields: Any
) -> dict[str, Any] | None:
    """The incident with an event that changes no state (e.g. the pager was told)."""
    if _has_event(incident, event_id):
        return None
    inc = copy.deepcopy(incident)
    inc["events"].append(_event(event_id, kind, **fields))
    inc["updated"] = inc["events"][-1]["at"]
    return inc


def resolves(incident: dict[str, Any], dag_id: str, task_ids: Iterable[str], run_id: str) -> bool:
    """Whether a success of the task (``task_ids``: its label and, for a mapped instance,
    its bare id) in ``run_id`` resolves ``incident`` (module docstring)."""
    if incident.get("state") not in UNRESOLVED or incident.get("dag_id") != dag_id:
        return False
    kind, task, names = incident.get("kind"), incident.get("task_id"), list(task_ids)
    if kind == "task_failed":
        return task == names[0]
    if kind == "sla_miss":
        return task in names and incident.get("run_id") != run_id
    return False


def resolve_payload(incident: dict[str, Any], dedup_key: str) -> dict[str, Any]:
    """The webhook body that resolves one page: PagerDuty Events v2 ``resolve`` with the
    trigger's dedup key, and a Slack ``text``."""
    how = incident.get("resolution") or "resolved"
    return {
        "text": f"[RESOLVED] {incident['dag_id']}.{incident['task_id']}: {how}",
        "event_action": "resolve",
        "dedup_key": dedup_key,
    }


def summary_row(incident: dict[str, Any]) -> dict[str, Any]:
    """The fields ``list`` and ``status`` show (``events``: the whole history)."""
    keys = ("id", "kind", "dag_id", "task_id", "run_id", "state", "opened", "updated")
    row = {k: incident.get(k) for k in keys}
    row.update(
        acked_by=incident.get("acked_by"),
        resolution=incident.get("resolution"),
        alerts=sum(1 for e in incident["events"] if e["type"] in ("opened", "repeat", "reopened")),
        events=incident["events"],
    )
    return row
