"""Alert delivery against real servers: a webhook on 127.0.0.1 and the stack's SeaweedFS
for the records (the dedupe markers). A webhook that fails then recovers gets the page
on redelivery; a delivered page is not sent again; a task cleared and failing again
pages again; no record ever holds the webhook URL (its path is a secret)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from http_receiver import Receiver

from rxvision.pipeline.alerts import Alert, AlertSinks, list_alerts, record_name
from rxvision.storage.s3 import S3Store

pytestmark = pytest.mark.integration

SECRET = "T000/B000/XoXoSeCrEt42"


@pytest.fixture
def records_uri(stack_env: dict[str, str]) -> str:
    """A fresh prefix for this test's alert records in the stack's S3."""
    return f"s3://rxvision-artifacts/it-alerts/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def flaky_webhook() -> Iterator[tuple[Receiver, str]]:
    """500 three times (the whole retry budget of one send), then 200; its URL has a
    Slack-like secret path."""
    receiver = Receiver([500, 500, 500, 200])
    yield receiver, f"http://127.0.0.1:{receiver.server.server_address[1]}/services/{SECRET}"
    receiver.close()


def _sinks(url: str, records_uri: str) -> AlertSinks:
    # every callback (and each redelivery) builds its own sinks
    return AlertSinks(webhook_url=url, records_uri=records_uri, store=S3Store())


def test_a_webhook_that_fails_then_recovers_gets_the_page_on_redelivery(
    records_uri: str, flaky_webhook: tuple[Receiver, str]
) -> None:
    receiver, url = flaky_webhook
    alert = Alert("sla_miss", "rxvision_nightly_retrain", "scheduled__9", "train", "late")
    record = f"{records_uri}/{record_name(alert)}"

    first = _sinks(url, records_uri).send(alert)
    assert first["webhook"] == "failed: WebhookError 500"
    assert first["record"].startswith("not written")
    assert len(receiver.bodies) == 3
    assert not S3Store().exists(record)  # no dedupe marker: the redelivery must page

    second = _sinks(url, records_uri).send(alert)
    assert (second["webhook"], second["record"]) == ("200", "ok")
    assert len(receiver.bodies) == 4
    assert receiver.bodies[-1]["dedup_key"] == alert.dedupe_key
    raw = S3Store().get_bytes(record)
    assert SECRET not in raw.decode()
    assert json.loads(raw)["delivery"]["webhook"] == "200"

    third = _sinks(url, records_uri).send(alert)
    assert third == {"dedupe": "already sent"}
    assert len(receiver.bodies) == 4  # not paged twice
    assert [a["dedupe_key"] for a in list_alerts(records_uri)] == [alert.dedupe_key]


def test_a_refused_alert_is_not_recorded_and_a_new_try_pages_again(records_uri: str) -> None:
    receiver = Receiver([404])
    url = f"http://127.0.0.1:{receiver.server.server_address[1]}/services/{SECRET}"
    try:
        failed = Alert("task_failed", "d", "manual__1", "train", "boom", try_number=1)
        refused = _sinks(url, records_uri).send(failed)
        assert refused["webhook"] == "refused: HTTP 404"
        assert not S3Store().exists(f"{records_uri}/{record_name(failed)}")
        assert _sinks(url, records_uri).send(failed)["record"] == "ok"  # now a 202
        assert _sinks(url, records_uri).send(failed) == {"dedupe": "already sent"}
        cleared = Alert("task_failed", "d", "manual__1", "train", "boom again", try_number=2)
        assert _sinks(url, records_uri).send(cleared)["record"] == "ok"
    finally:
        receiver.close()
    assert [b["dedup_key"] for b in receiver.bodies] == [
        "task_failed:d:manual__1:train:try1",
        "task_failed:d:manual__1:train:try1",
        "task_failed:d:manual__1:train:try2",
    ]
    assert sorted(a["try_number"] for a in list_alerts(records_uri)) == [1, 2]
