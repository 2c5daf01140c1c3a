"""Alerts: the webhook body (Slack + PagerDuty fields), retries on 5xx, statsd counters,
a failing sink never stopping the others, the try number in a task failure's key, and
no webhook URL (a secret) in any log. Real HTTP and UDP on loopback."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator

import pytest
from http_receiver import Receiver

from rxvision.pipeline.alerts import Alert, AlertSinks, record_name

pytestmark = pytest.mark.unit


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


ALERT = Alert(
    kind="sla_miss",
    dag_id="rxvision_nightly_retrain",
    run_id="manual__2026-11-26T02:00:00+00:00",
    task_id="train",
    summary="train not finished 1:10:00 after the run was queued",
    severity="warning",
    details={"budget_s": 3600},
)


def test_payload_has_slack_text_and_pagerduty_fields() -> None:
    body = ALERT.payload()
    assert body["text"].startswith("[WARNING] rxvision_nightly_retrain.train: ")
    assert body["event_action"] == "trigger"
    assert (
        body["dedup_key"]
        == "sla_miss:rxvision_nightly_retrain:manual__2026-11-26T02:00:00+00:00:train"
    )
    assert body["payload"]["custom_details"] == {"run_id": ALERT.run_id, "budget_s": 3600}
    assert body["payload"]["source"] == "airflow/rxvision_nightly_retrain/train"
    assert "/" not in record_name(ALERT) and record_name(ALERT).endswith(".json")


def test_webhook_retries_5xx_and_statsd_counts(udp: socket.socket) -> None:
    receiver = Receiver([503])
    try:
        sinks = AlertSinks(
            webhook_url=receiver.url, statsd_host="127.0.0.1", statsd_port=udp.getsockname()[1]
        )
        outcome = sinks.send(ALERT)
    finally:
        receiver.close()
    assert outcome == {"log": "ok", "statsd": "ok", "webhook": "202", "record": "off"}
    assert len(receiver.bodies) == 2  # the 503, then the retry
    packet = udp.recv(4096).decode()
    assert "rxvision.alerts.sla_miss:1|c" in packet
    assert "rxvision.alerts.sla_miss.rxvision_nightly_retrain.train:1|c" in packet


def test_a_dead_webhook_does_not_stop_the_other_sinks(udp: socket.socket) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"  # bound, never listening
    sinks = AlertSinks(webhook_url=dead, statsd_host="127.0.0.1", statsd_port=udp.getsockname()[1])
    outcome = sinks.send(ALERT)
    assert outcome["webhook"].startswith("failed: ConnectionError")
    assert outcome["statsd"] == "ok"
    assert b"alerts.sla_miss" in udp.recv(4096)


def test_no_sinks_configured_still_logs(caplog: pytest.LogCaptureFixture) -> None:
    outcome = AlertSinks().send(ALERT)
    assert outcome == {"log": "ok", "statsd": "off", "webhook": "off", "record": "off"}
    assert "ALERT sla_miss" in caplog.text


SECRET = "T000/B000/XoXoSeCrEt42"


def _secret_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/services/{SECRET}"


def _assert_no_secret(caplog: pytest.LogCaptureFixture, outcome: dict[str, str]) -> None:
    assert caplog.records, "nothing was logged"
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.name
    assert SECRET not in caplog.text  # formatted, tracebacks included
    assert SECRET not in repr(outcome)


def test_task_failure_key_carries_the_try_number_sla_key_does_not() -> None:
    first = Alert("task_failed", "d", "manual__1", "score_shard[3]", "boom", try_number=1)
    again = Alert("task_failed", "d", "manual__1", "score_shard[3]", "boom", try_number=2)
    assert first.dedupe_key == "task_failed:d:manual__1:score_shard[3]:try1"
    assert again.dedupe_key == "task_failed:d:manual__1:score_shard[3]:try2"
    assert record_name(first) != record_name(again)
    assert ALERT.dedupe_key.endswith(":train")  # an SLA miss: one per run and task
    for alert in (first, again, ALERT):
        assert re.fullmatch(r"[A-Za-z0-9_.-]+\.json", record_name(alert)), record_name(alert)


def test_record_names_of_keys_that_differ_only_in_unsafe_characters_differ() -> None:
    mapped = Alert("task_failed", "d", "r", "train[3]", "x", try_number=1)
    plain = Alert("task_failed", "d", "r", "train_3_", "x", try_number=1)
    assert record_name(mapped) != record_name(plain)


def test_connection_refused_logs_neither_the_url_nor_its_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connection refused
    outcome = AlertSinks(webhook_url=_secret_url(port)).send(ALERT)
    assert outcome["webhook"] == "failed: ConnectionError"
    assert outcome["record"].startswith("not written")
    assert f"webhook at http://127.0.0.1:{port} failed" in caplog.text
    assert "ConnectionError" in caplog.text
    _assert_no_secret(caplog, outcome)


@pytest.mark.parametrize(
    ("statuses", "posts", "webhook", "logged"),
    [
        ([500, 500, 500], 3, "failed: WebhookError 500", "HTTP 500 after retries"),
        ([404], 1, "refused: HTTP 404", "HTTP 404, a permanent failure"),
    ],
)
def test_a_failed_webhook_logs_status_and_origin_never_the_secret(
    caplog: pytest.LogCaptureFixture,
    statuses: list[int],
    posts: int,
    webhook: str,
    logged: str,
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 logs the request path at DEBUG
    receiver = Receiver(statuses)
    port = receiver.server.server_address[1]
    try:
        outcome = AlertSinks(webhook_url=_secret_url(port)).send(ALERT)
    finally:
        receiver.close()
    assert len(receiver.bodies) == posts  # 5xx retried (the budget is 3), 4xx not
    assert outcome["webhook"] == webhook
    assert outcome["record"].startswith("not written")
    assert f"webhook at http://127.0.0.1:{port} " in caplog.text and logged in caplog.text
    urllib3_lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any("<redacted>" in line for line in urllib3_lines)  # the filter was needed
    _assert_no_secret(caplog, outcome)


def test_a_rate_limited_webhook_is_retried_not_refused() -> None:
    receiver = Receiver([429])
    try:
        outcome = AlertSinks(webhook_url=receiver.url).send(ALERT)
    finally:
        receiver.close()
    assert (outcome["webhook"], len(receiver.bodies)) == ("202", 2)
