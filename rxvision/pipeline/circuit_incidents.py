"""The scoring circuit breaker's switches as an incident on-call can follow.

A scoring run whose primary model failed (its breaker opened and the fallback scored)
pages once, as a ``circuit_open`` alert of the run's ``score_shard`` task (severity
warning: predictions were still written, by the fallback, each row saying so). Every
switch of every shard's breaker (open, half-open, closed) becomes an event on that
incident, with the shard, the time and the reason, so the history reads as it happened.
Event ids are derived from the switch itself, so a publish that runs again (a cleared
task) adds nothing twice.

**Auto-recovery** closes the incident: when every shard whose breaker opened ended the
run closed again (the half-open trial after the cool-down passed), the incident of this
run resolves itself, and a later run that scored without a single switch resolves the
circuit incidents of earlier runs. Either way the webhook gets ``event_action: resolve``
with the page's dedup key.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from rxvision.pipeline.alerts import Alert, AlertSinks
from rxvision.pipeline.incidents import (
    UNRESOLVED,
    apply_note,
    apply_resolve,
    incident_id,
    task_prefix,
)

log = logging.getLogger(__name__)

KIND = "circuit_open"
TASK_ID = "score_shard"
RECOVERER = "rxvision (auto-recovery)"


def circuit_alert(
    events: Sequence[Mapping[str, Any]], dag_id: str, run_id: str, model_uri: str | None
) -> Alert:
    """The page for a run whose breaker opened (one per run, whatever the switches)."""
    opened = [e for e in events if e.get("to") == "open"]
    shards = sorted({str(e.get("shard_id")) for e in opened})
    first = opened[0] if opened else events[0]
    return Alert(
        kind=KIND,
        dag_id=dag_id,
        run_id=run_id,
        task_id=TASK_ID,
        severity="warning",
        summary=(
            f"primary model {model_uri or '?'} failed in {len(shards)} shard(s): the "
            f"circuit opened ({first.get('reason')}); the fallback scored meanwhile"
        ),
        details={"shards": shards, "switches": len(events)},
    )


def recovered(events: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every shard whose breaker switched ended the run closed again."""
    last: dict[str, str] = {}
    for event in sorted(events, key=lambda e: str(e.get("time"))):
        last[str(event.get("shard_id"))] = str(event.get("to"))
    return bool(last) and all(state == "closed" for state in last.values())


def _switch_event_id(event: Mapping[str, Any]) -> str:
    raw = f"{event.get('shard_id')}|{event.get('time')}|{event.get('from')}|{event.get('to')}"
    return "circuit-" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def report_circuit(
    events: Sequence[Mapping[str, Any]],
    dag_id: str,
    run_id: str,
    sinks: AlertSinks,
    *,
    model_uri: str | None = None,
) -> dict[str, Any]:
    """Page for a run's breaker switches, record each on the run's incident, resolve it
    when the primary recovered; with no switch, resolve earlier runs' circuit incidents.
    Returns what was done (``incident``, ``switches``, ``resolved``)."""
    store = sinks.incidents()
    if not events:
        resolved = _resolve_earlier(sinks, dag_id, run_id) if store is not None else []
        return {"incident": None, "switches": 0, "resolved": resolved}
    alert = circuit_alert(events, dag_id, run_id, model_uri)
    sinks.send(alert)
    if store is None:
        return {"incident": None, "switches": len(events), "resolved": []}
    ident = incident_id(alert)
    for event in sorted(events, key=lambda e: str(e.get("time"))):
        eid = _switch_event_id(event)
        fields = {k: event.get(k) for k in ("shard_id", "time", "from", "to", "reason")}
        store.update(
            ident,
            lambda cur, e=eid, f=fields: (
                apply_note(cur, f"circuit_{f['to']}", e, **f) if cur else None
            ),
        )
    resolved = []
    if recovered(events):
        note = "primary model restored after its cool-down (half-open trial passed)"
        if _resolve(sinks, ident, note, f"{ident}-recovered", run_id):
            resolved.append(ident)
    log.info("circuit incident %s: %d switches, resolved: %s", ident, len(events), resolved)
    return {"incident": ident, "switches": len(events), "resolved": resolved}


def _resolve(sinks: AlertSinks, ident: str, note: str, event_id: str, run_id: str) -> bool:
    """Resolve one incident (idempotent by ``event_id``) and tell the webhook."""
    store = sinks.incidents()
    incident, changed = store.update(
        ident,
        lambda cur: (
            apply_resolve(cur, note, RECOVERER, event_id, run_id=run_id)
            if cur and cur.get("state") in UNRESOLVED
            else None
        ),
    )
    if changed and incident is not None:
        sinks.notify_resolved(incident)
        sinks.send_open_gauge()
    return bool(changed)


def _resolve_earlier(sinks: AlertSinks, dag_id: str, run_id: str) -> list[str]:
    """Resolve the unresolved circuit incidents of other runs: this one scored clean."""
    store = sinks.incidents()
    done = []
    for incident in store.find(prefix=task_prefix(dag_id, TASK_ID)):
        if incident.get("kind") != KIND or incident.get("state") not in UNRESOLVED:
            continue
        if incident.get("run_id") == run_id:
            continue
        note = f"run {run_id} scored with the primary model and no circuit switch"
        if _resolve(sinks, incident["id"], note, f"{incident['id']}-clean-{run_id}", run_id):
            done.append(str(incident["id"]))
    return done
