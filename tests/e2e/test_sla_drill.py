"""Per-task SLAs through the real scheduler and triggerer: the drill DAG's `late` task
sleeps past its budget and its deadline callback pages on-call (webhook, statsd, the
alert record); `on_time` finishes within budget and its deadline fires nothing."""

from __future__ import annotations

import pytest
from e2e_helpers import WebhookReceiver, wait_for

from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.config import load_pipeline_config
from rxvision.stack.local_stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

DRILL = load_pipeline_config().drill


def test_late_task_pages_on_call_and_on_time_task_does_not(
    client: AirflowClient, webhook: WebhookReceiver, e2e_stack: LocalStack
) -> None:
    due = DRILL.cumulative_budgets()
    # `late` sleeps 10 s past its deadline (the triggerer runs a callback ~2 s after it is
    # due) and stays within its hard limit; `on_time`'s deadline passes while it sleeps
    sleep_s = due["late"].total_seconds() + 10
    assert sleep_s + 5 < DRILL.sla_s["late"] * load_pipeline_config().hard_limit_factor
    client.wait_for_dag(DRILL.dag_id, timeout_s=180)
    run_id = client.trigger(DRILL.dag_id, {"sleep_s": sleep_s})
    assert client.wait_for_run(DRILL.dag_id, run_id, timeout_s=300) == "success"

    key = f"sla_miss:{DRILL.dag_id}:{run_id}:late"
    alerts = wait_for(
        lambda: [a for a in webhook.alerts("sla_miss", DRILL.dag_id) if a["dedup_key"] == key],
        timeout=30,
        what="the SLA alert for `late` at the webhook",
    )
    assert len(alerts) == 1
    body = alerts[0]
    assert body["payload"]["severity"] == "warning"
    assert body["payload"]["source"] == f"airflow/{DRILL.dag_id}/late"
    assert "late not finished" in body["text"]
    # on_time's deadline came and went while `late` slept: no alert for it
    assert not [a for a in webhook.alerts(dag_id=DRILL.dag_id) if ":on_time" in a["dedup_key"]]

    # the listener sends from the task's process after the task reports success, and the
    # receiver saves every 0.5 s: a run seen as done may still have datagrams in flight
    late_miss = f"rxvision.task.sla_miss.{DRILL.dag_id}.late"
    metrics = wait_for(
        lambda: (m := e2e_stack.metrics())["counters"].get(late_miss) and m,
        timeout=30,
        what=f"{late_miss} at the statsd receiver",
    )
    counters = metrics["counters"]
    assert counters.get("rxvision.alerts.sla_miss", 0) >= 1
    assert counters.get(f"rxvision.alerts.sla_miss.{DRILL.dag_id}.late") == 1
    # the listener timed both tasks; only `late` went over its own budget
    assert counters[late_miss] == 1
    assert f"rxvision.task.sla_miss.{DRILL.dag_id}.on_time" not in counters
    assert f"rxvision.task.duration.{DRILL.dag_id}.on_time" in metrics["timers"]
