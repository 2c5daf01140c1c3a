"""The task listener: a success within the task's budget auto-resolves its incidents; a
success over budget and a failure do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("airflow.sdk")

from rxvision_airflow import listener

pytestmark = pytest.mark.unit


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.delenv("STATSD_HOST", raising=False)
    monkeypatch.setattr(
        "rxvision_airflow.alerting.resolve_after_success",
        lambda *args: calls.append(args) or [],
    )
    return calls


def task(seconds_ago: float, task_id: str = "train", map_index: int = -1) -> SimpleNamespace:
    return SimpleNamespace(
        dag_id="rxvision_nightly_retrain",
        task_id=task_id,
        map_index=map_index,
        run_id="scheduled__2",
        start_date=datetime.now(UTC) - timedelta(seconds=seconds_ago),
    )


def test_a_success_within_budget_resolves(resolved: list[tuple[Any, ...]]) -> None:
    listener.on_task_instance_success(None, task(5))
    assert len(resolved) == 1
    dag_id, task_id, map_index, run_id, note = resolved[0]
    assert (dag_id, task_id, map_index, run_id) == (
        "rxvision_nightly_retrain",
        "train",
        -1,
        "scheduled__2",
    )
    assert note.startswith("train succeeded in scheduled__2 in ")
    assert note.endswith("within its 3600 s budget")


def test_a_mapped_instance_passes_its_index(resolved: list[tuple[Any, ...]]) -> None:
    listener.on_task_instance_success(None, task(5, "train", map_index=3))
    assert resolved[0][2] == 3


def test_over_budget_or_failed_resolves_nothing(resolved: list[tuple[Any, ...]]) -> None:
    listener.on_task_instance_success(None, task(3700))  # train's budget is 3600 s
    listener.on_task_instance_failed(None, task(5), RuntimeError("boom"))
    assert resolved == []


def test_the_note_says_how() -> None:
    assert listener.resolve_note("t", "r", 12.4, None) == "t succeeded in r in 12 s (no budget)"
