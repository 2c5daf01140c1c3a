"""Per-task SLAs: one deadline per task at its cumulative budget, and the callback's
verdict from the task's states (mapped instances included) and the run's state (a run
still queued behind another does not page)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from http_receiver import Receiver

pytest.importorskip("airflow.sdk")

from rxvision.home import repo_root
from rxvision.pipeline.alerts import Alert
from rxvision.pipeline.config import DagSettings, load_pipeline_config
from rxvision_airflow import sla

pytestmark = pytest.mark.unit


def test_one_deadline_per_task_at_its_cumulative_budget() -> None:
    settings = DagSettings(dag_id="d", sla_s={"first": 60, "second": 30})
    alerts = sla.task_deadline_alerts(settings)
    assert [a.name for a in alerts] == ["task_sla:first", "task_sla:second"]
    assert [a.interval for a in alerts] == [timedelta(seconds=60), timedelta(seconds=90)]
    assert alerts[1].callback.path == sla.CALLBACK
    assert alerts[1].callback.kwargs == {
        "dag_id": "d",
        "task_id": "second",
        "budget_s": 30,
        "due_s": 90.0,
    }


@pytest.mark.parametrize(
    ("states", "task_id", "found"),
    [
        ({"train": "running", "train_x": "success"}, "train", ["running"]),
        (
            {"score_shard_0": "success", "score_shard_1": None, "publish": None},
            "score_shard",
            ["success", "none"],
        ),
        ({"score_shard_extra": "success"}, "score_shard", []),
        ({}, "train", []),
    ],
)
def test_states_of_finds_plain_and_mapped_instances(
    states: dict[str, Any], task_id: str, found: list[str]
) -> None:
    assert sla.states_of(states, task_id) == found


@pytest.mark.parametrize(
    ("states", "verdict"),
    [
        (["success"], "finished"),
        (["success", "skipped"], "finished"),
        (["running"], "late"),
        (["success", "running"], "late"),
        ([], "late"),  # not even started by its deadline
        (["none"], "late"),
        (["failed"], "failed"),
        (["success", "upstream_failed"], "failed"),
    ],
)
def test_verdict(states: list[str], verdict: str) -> None:
    assert sla.sla_verdict(states) == verdict


class RecordingSinks:
    def __init__(self) -> None:
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> dict[str, str]:
        self.sent.append(alert)
        return {"webhook": "202"}


@pytest.mark.parametrize(
    ("state", "alerted"), [("running", True), ("success", False), ("failed", False)]
)
def test_callback_alerts_only_a_task_that_has_not_finished(
    monkeypatch: pytest.MonkeyPatch, state: str, alerted: bool
) -> None:
    sinks = RecordingSinks()
    monkeypatch.setattr(
        sla, "_task_states", lambda dag_id, run_id: {"train": state, "evaluate": None}
    )
    monkeypatch.setattr("rxvision_airflow.alerting.build_sinks", lambda cfg: sinks)
    # the shape the scheduler sends: the REST API's DAGRunResponse, dumped
    context = {"dag_run": {"dag_id": "nightly", "dag_run_id": "manual__1"}, "deadline": {}}
    result = asyncio.run(
        sla.task_sla_callback("nightly", "train", budget_s=60, due_s=600, context=context)
    )
    assert isinstance(result, str)  # the triggerer stores it; a dict would crash it
    assert bool(sinks.sent) is alerted
    if alerted:
        alert = sinks.sent[0]
        assert (alert.kind, alert.dag_id, alert.run_id, alert.task_id) == (
            "sla_miss",
            "nightly",
            "manual__1",
            "train",
        )
        assert "0:10:00 after the run was queued" in alert.summary


def test_default_args_carry_retries_backoff_owner_and_the_failure_alert() -> None:
    cfg = load_pipeline_config()
    args = sla.default_args(cfg)
    assert args["owner"] == cfg.owner != "airflow"
    assert args["retries"] == cfg.retries.count
    assert args["retry_exponential_backoff"] == cfg.retries.exponential_backoff
    assert args["max_retry_delay"] == timedelta(seconds=cfg.retries.max_delay_s)
    assert args["on_failure_callback"].__name__ == "on_task_failure"
    assert sla.task_limits(cfg, cfg.nightly, "train")["execution_timeout"] == timedelta(
        seconds=cfg.nightly.sla_s["train"] * cfg.hard_limit_factor
    )


@pytest.mark.parametrize(
    ("live", "snapshot", "queued"),
    [
        ("queued", {"state": "queued", "start_date": None}, True),  # behind another run
        (None, {"state": "queued", "start_date": None}, True),  # live lookup failed
        ("running", {"state": "queued", "start_date": None}, True),  # queued at the deadline
        ("queued", {"state": "running"}, True),  # cleared since: queued again
        ("running", {"state": "running", "start_date": "2026-11-26T02:00:05Z"}, False),
        (None, {"dag_run_id": "r"}, False),  # unknown: page
        (None, None, False),
    ],
)
def test_run_was_queued(live: str | None, snapshot: dict[str, Any] | None, queued: bool) -> None:
    assert sla.run_was_queued(live, snapshot) is queued


def test_run_was_queued_reads_the_sdk_enum() -> None:
    # the type of RuntimeTaskInstance.get_dagrun_state's answer
    from airflow.sdk.api.datamodels._generated import DagRunState

    assert sla.run_was_queued(DagRunState.QUEUED, None) is True
    assert sla.run_was_queued(DagRunState.RUNNING, None) is False


@pytest.mark.parametrize(
    ("states", "run_queued", "verdict"),
    [
        ([], True, "queued"),  # behind another run: its work has not begun
        (["none"], True, "queued"),
        ([], False, "late"),  # the run started, the task never did: page
        (["none"], False, "late"),
        (["success"], True, "finished"),
        (["failed"], True, "failed"),
    ],
)
def test_verdict_of_a_queued_run(states: list[str], run_queued: bool, verdict: str) -> None:
    assert sla.sla_verdict(states, run_queued) == verdict


@pytest.fixture
def webhook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """The real config with the webhook connection on a loopback receiver, no S3."""
    cfg = yaml.safe_load((repo_root() / "configs" / "pipeline.yaml").read_text())
    cfg["alerts_uri"] = None
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    receiver = Receiver([])
    monkeypatch.setenv("RXVISION_PIPELINE_CONFIG", str(path))
    monkeypatch.setenv(
        "AIRFLOW_CONN_RXVISION_ALERTS", f'{{"conn_type": "http", "host": "{receiver.url}"}}'
    )
    monkeypatch.delenv("STATSD_HOST", raising=False)
    yield receiver
    receiver.close()


def _run_callback(monkeypatch: pytest.MonkeyPatch, run_state: str, start: str | None) -> str:
    # only Airflow's state lookups are replaced (they need the triggerer's supervisor)
    monkeypatch.setattr(sla, "_task_states", lambda dag_id, run_id: {"train": None})
    monkeypatch.setattr(sla, "_dag_run_state", lambda dag_id, run_id: run_state)
    context = {
        "dag_run": {
            "dag_id": "nightly",
            "dag_run_id": "scheduled__2",
            "state": run_state,
            "queued_at": "2026-11-26T02:00:00Z",
            "start_date": start,
        },
        "deadline": {},
    }
    return asyncio.run(
        sla.task_sla_callback("nightly", "train", budget_s=60, due_s=600, context=context)
    )


def test_callback_of_a_run_queued_behind_another_does_not_page(
    monkeypatch: pytest.MonkeyPatch, webhook: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=sla.log.name)
    result = _run_callback(monkeypatch, "queued", None)
    assert result == "train: run still queued, no alert"
    assert webhook.bodies == []
    assert "the run is still queued behind another run" in caplog.text


def test_callback_of_a_started_run_whose_task_never_started_pages(
    monkeypatch: pytest.MonkeyPatch, webhook: Receiver
) -> None:
    result = _run_callback(monkeypatch, "running", "2026-11-26T02:00:05Z")
    assert result.startswith("train: late, alert")
    (body,) = webhook.bodies
    assert body["dedup_key"] == "sla_miss:nightly:scheduled__2:train"
    assert "states: ['none']" in body["payload"]["summary"]
