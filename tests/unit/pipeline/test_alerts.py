"""Alerts: the webhook body (Slack + PagerDuty fields), retries on 5xx, statsd counters,
and a failing sink never stopping the others. Real HTTP and UDP on loopback."""

from __future__ import annotations

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
