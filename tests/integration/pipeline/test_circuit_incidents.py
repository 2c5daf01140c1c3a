"""The scoring breaker's switches as incidents, against the stack's real SeaweedFS and a
local webhook: a run whose primary failed opens one incident with every switch on it,
a run whose breaker closed again resolves its own, a clean run resolves earlier ones,
and a publish that runs again adds nothing twice."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from http_receiver import Receiver

from rxvision.pipeline.alerts import AlertSinks
from rxvision.pipeline.circuit_incidents import report_circuit
from rxvision.pipeline.incident_store import IncidentStore
from rxvision.serving.circuit import CircuitBreaker, CircuitConfig
from rxvision.storage.s3 import S3Store

pytestmark = pytest.mark.integration

DAG = "rxvision_batch_scoring"
MODEL = "models:/pill-classifier/3"


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    receiver = Receiver([])
    yield receiver
    receiver.close()


@pytest.fixture
def sinks(stack_env: dict[str, str], webhook: Receiver) -> AlertSinks:
    root = f"s3://rxvision-artifacts/it-circuit/{uuid.uuid4().hex[:8]}"
    return AlertSinks(
        webhook_url=webhook.url,
        store=S3Store(),
        records_uri=f"{root}/alerts",  # the dedupe records, as in the DAG's sinks
        incidents_uri=f"{root}/incidents",
    )


def switches(shard: str, *, recovers: bool) -> list[dict[str, Any]]:
    """A real breaker's events: failures open it; after the cool-down the half-open
    trial passes (``recovers``) or fails."""
    now = [0.0]
    breaker = CircuitBreaker(
        CircuitConfig(window=4, min_calls=2, cooldown_s=30), clock=lambda: now[0]
    )
    breaker.record(failures=2)
    now[0] = 31.0
    assert breaker.allow()
    breaker.record(successes=int(recovers), failures=int(not recovers))
    return [{**e, "shard_id": shard} for e in breaker.events]


def test_switches_form_one_incident_that_recovery_resolves(
    sinks: AlertSinks, webhook: Receiver
) -> None:
    store = sinks.incidents()
    assert isinstance(store, IncidentStore)
    # run 1: shard 0 recovered after its cool-down, shard 1's trial failed (still open)
    events = switches("shard-00000", recovers=True) + switches("shard-00001", recovers=False)
    first = report_circuit(events, DAG, "scheduled__1", sinks, model_uri=MODEL)
    assert first["switches"] == 6 and first["resolved"] == []
    incident = store.get(first["incident"])
    assert (incident["kind"], incident["state"], incident["task_id"]) == (
        "circuit_open",
        "open",
        "score_shard",
    )
    types = [e["type"] for e in incident["events"]]
    assert types[0] == "opened"
    recovered, failed_trial = ("open", "half_open", "closed"), ("open", "half_open", "open")
    assert types[1:] == [f"circuit_{t}" for t in (*recovered, *failed_trial)]
    assert {e["shard_id"] for e in incident["events"][1:]} == {"shard-00000", "shard-00001"}
    page = webhook.bodies[-1]
    assert page["event_action"] == "trigger" and page["payload"]["severity"] == "warning"
    assert MODEL in page["payload"]["summary"]

    # the publish runs again (a cleared task): no new page, no duplicate event
    again = report_circuit(events, DAG, "scheduled__1", sinks, model_uri=MODEL)
    assert again["incident"] == first["incident"]
    assert len(store.get(first["incident"])["events"]) == len(incident["events"])
    assert [b["event_action"] for b in webhook.bodies] == ["trigger"]

    # run 2: its only shard recovered: the incident resolves itself, the pager is told
    second = report_circuit(
        switches("shard-00000", recovers=True), DAG, "scheduled__2", sinks, model_uri=MODEL
    )
    assert second["resolved"] == [second["incident"]]
    assert store.get(second["incident"])["resolved_by"] == "rxvision (auto-recovery)"
    resolve = webhook.bodies[-1]
    assert resolve["event_action"] == "resolve"
    assert resolve["dedup_key"] == webhook.bodies[-2]["dedup_key"]

    # run 3 scores without a switch: run 1's incident (still open) resolves
    clean = report_circuit([], DAG, "scheduled__3", sinks, model_uri=MODEL)
    assert clean == {"incident": None, "switches": 0, "resolved": [first["incident"]]}
    closed = store.get(first["incident"])
    assert closed["state"] == "resolved" and "scheduled__3" in closed["resolution"]
    assert webhook.bodies[-1]["dedup_key"] == page["dedup_key"]
    assert report_circuit([], DAG, "scheduled__4", sinks)["resolved"] == []
