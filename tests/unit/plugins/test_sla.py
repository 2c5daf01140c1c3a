"""Per-task SLAs: one deadline per task at its cumulative budget, and the callback's
verdict from the task's states (mapped instances included)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

pytest.importorskip("airflow.sdk")

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
