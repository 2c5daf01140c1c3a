"""The incident state machine: the key without the try, a stable safe id, opened /
repeat / reopened, ack, idempotent resolve, which successes resolve what, the resolve
payload; and an incident store that fails never failing a send (real webhook on
127.0.0.1, an S3 endpoint that refuses connections)."""

from __future__ import annotations

import re

import pytest
from http_receiver import Receiver

from rxvision.errors import NotFound
from rxvision.pipeline.alerts import Alert, AlertSinks
from rxvision.pipeline.incident_store import IncidentStore
from rxvision.pipeline.incidents import (
    apply_ack,
    apply_alert,
    apply_note,
    apply_resolve,
    incident_id,
    incident_key,
    incidents_uri_for,
    resolve_payload,
    resolves,
    summary_row,
)
from rxvision.storage.s3 import S3Config, S3Store

pytestmark = pytest.mark.unit

DAG = "rxvision_nightly_retrain"


def failure(try_number: int, run_id: str = "scheduled__1", task_id: str = "train") -> Alert:
    return Alert("task_failed", DAG, run_id, task_id, f"boom {try_number}", try_number=try_number)


def late(run_id: str = "scheduled__1", task_id: str = "train") -> Alert:
    return Alert("sla_miss", DAG, run_id, task_id, "late", severity="warning")


def opened(alert: Alert) -> dict:
    inc = apply_alert(None, alert, "e1", {"webhook": "202"})
    assert inc is not None
    return inc


def test_the_key_drops_the_try_so_tries_share_one_incident() -> None:
    one, three = failure(1), failure(3)
    assert one.dedupe_key != three.dedupe_key  # each try pages
    assert incident_key(one) == incident_key(three) == f"task_failed:{DAG}:scheduled__1:train"
    assert incident_id(one) == incident_id(three)
    assert incident_id(failure(1, run_id="scheduled__2")) != incident_id(one)
    assert incident_id(late()) != incident_id(one)  # another kind, another incident
    assert incident_id(one).startswith(f"{DAG}.train.task_failed.")


def test_ids_are_safe_and_keep_unsafe_keys_apart() -> None:
    a = incident_id(failure(1, task_id="score[3]"))
    b = incident_id(failure(1, task_id="score_3_"))
    assert a != b
    for found in (a, b, incident_id(late(run_id="manual__2026-11-26T02:00:00+00:00"))):
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", found)


def test_opened_repeat_ack_resolve_reopen() -> None:
    inc = opened(failure(1))
    assert (inc["state"], inc["opened"], inc["events"][0]["type"]) == (
        "open",
        inc["opened"],
        "opened",
    )
    inc = apply_alert(inc, failure(2), "e2", {})
    assert inc is not None and inc["events"][-1]["type"] == "repeat"
    assert inc["dedup_keys"] == [failure(1).dedupe_key, failure(2).dedupe_key]

    inc = apply_ack(inc, "ann", "e3")
    assert inc is not None and (inc["state"], inc["acked_by"]) == ("acked", "ann")
    assert inc["acked_at"] == inc["events"][-1]["at"]
    inc = apply_alert(inc, failure(3), "e4", {})
    assert inc is not None and inc["state"] == "acked"  # a repeat keeps it acked

    inc = apply_resolve(inc, "disk freed", "bob", "e5")
    assert inc is not None
    assert (inc["state"], inc["resolved_by"], inc["resolution"]) == (
        "resolved",
        "bob",
        "disk freed",
    )
    assert apply_resolve(inc, "again", "bob", "e6") is None  # resolving twice: no change
    assert apply_ack(inc, "ann", "e7") is None  # a resolved incident is not acked

    inc = apply_alert(inc, failure(4), "e8", {})
    assert inc is not None and inc["state"] == "open" and inc["events"][-1]["type"] == "reopened"
    assert inc["resolution"] is None and inc["acked_by"] is None
    types = [e["type"] for e in inc["events"]]
    assert types == ["opened", "repeat", "acked", "repeat", "resolved", "reopened"]


def test_an_event_is_applied_once() -> None:
    inc = opened(failure(1))
    assert apply_alert(inc, failure(1), "e1", {}) is None  # a retried PUT that had landed
    acked = apply_ack(inc, "ann", "e2")
    assert acked is not None and apply_ack(acked, "ann", "e2") is None
    noted = apply_note(inc, "notified", "e3", webhook={"k": "202"})
    assert noted is not None and apply_note(noted, "notified", "e3") is None
    assert len(inc["events"]) == 1  # the state machine returns copies


def test_which_success_resolves_what() -> None:
    fail = opened(failure(1))
    assert resolves(fail, DAG, ["train", "train"], "scheduled__1")  # the retry succeeded
    assert resolves(fail, DAG, ["train", "train"], "scheduled__2")
    assert not resolves(fail, DAG, ["evaluate", "evaluate"], "scheduled__2")
    assert not resolves(fail, "other_dag", ["train", "train"], "scheduled__2")

    miss = opened(late())
    assert not resolves(miss, DAG, ["train", "train"], "scheduled__1")  # same run: still late
    assert resolves(miss, DAG, ["train", "train"], "scheduled__2")

    mapped = opened(failure(1, task_id="score[3]"))
    assert resolves(mapped, DAG, ["score[3]", "score"], "scheduled__2")
    assert not resolves(mapped, DAG, ["score[0]", "score"], "scheduled__2")
    assert resolves(opened(late(task_id="score")), DAG, ["score[0]", "score"], "scheduled__2")

    refused = opened(Alert("not_promoted", DAG, "scheduled__1", "register", "gates"))
    assert not resolves(refused, DAG, ["register", "register"], "scheduled__2")
    done = apply_resolve(fail, "ok", "bob", "e9")
    assert done is not None and not resolves(done, DAG, ["train", "train"], "scheduled__2")


def test_the_resolve_payload_carries_the_triggers_dedup_key() -> None:
    alert = failure(2)
    inc = apply_resolve(opened(alert), "train succeeded", "rxvision", "e2")
    assert inc is not None
    body = resolve_payload(inc, inc["dedup_keys"][0])
    assert body["event_action"] == "resolve"
    assert body["dedup_key"] == alert.payload()["dedup_key"] == alert.dedupe_key
    assert body["text"] == f"[RESOLVED] {DAG}.train: train succeeded"


def test_summary_row_has_what_list_json_promises() -> None:
    row = summary_row(apply_alert(opened(failure(1)), failure(2), "e2", {}) or {})
    for key in ("id", "kind", "dag_id", "task_id", "state", "opened", "events"):
        assert row[key] is not None
    assert row["alerts"] == 2 and len(row["events"]) == 2


def test_incidents_live_beside_the_alert_records() -> None:
    assert (
        incidents_uri_for("s3://rxvision-artifacts/alerts") == "s3://rxvision-artifacts/incidents"
    )
    assert incidents_uri_for("s3://b/on-call/alerts/") == "s3://b/on-call/incidents"
    assert incidents_uri_for(None) is None


def test_an_unsafe_id_is_not_found_before_any_request() -> None:
    store = IncidentStore("s3://b/incidents", S3Store(S3Config(endpoint_url="http://127.0.0.1:1")))
    with pytest.raises(NotFound, match=r"'\.\./x/y'"):
        store.get("../x/y")


def test_a_failing_incident_store_never_fails_the_send(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    dead = S3Store(S3Config(endpoint_url="http://127.0.0.1:1"))
    receiver = Receiver([])
    try:
        sinks = AlertSinks(webhook_url=receiver.url, store=dead, incidents_uri="s3://b/incidents")
        outcome = sinks.send(failure(1))
        assert outcome["webhook"] == "202"
        assert outcome["incident"].startswith("failed: ")
        assert sinks.resolve_incidents(DAG, "train", None, "scheduled__2", "ok") == []
    finally:
        receiver.close()
    assert len(receiver.bodies) == 1
