"""Per-task SLAs through the real scheduler and triggerer: the drill DAG's `late` task
sleeps past its budget and its deadline callback pages on-call (webhook, statsd, the
alert record); `on_time` finishes within budget and its deadline fires nothing. The page
opens an incident; on-call acks it with the CLI, and the drill's next run, on time,
resolves it by itself with a resolve event at the webhook."""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e_helpers import WebhookReceiver, rxvision, wait_for

from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.config import load_pipeline_config
from rxvision.stack.local_stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

DRILL = load_pipeline_config().drill


def incidents(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """``rxvision incidents list --json`` of the drill DAG."""
    found = json.loads(rxvision(env, "incidents", "list", "--json", *args).stdout)
    return [i for i in found if i["dag_id"] == DRILL.dag_id]


def test_late_task_pages_on_call_and_on_time_task_does_not(
    client: AirflowClient,
    webhook: WebhookReceiver,
    e2e_stack: LocalStack,
    e2e_env: dict[str, str],
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

    # the page opened an incident: on-call acks it
    (incident,) = [i for i in incidents(e2e_env, "--state", "open") if i["run_id"] == run_id]
    assert (incident["kind"], incident["task_id"]) == ("sla_miss", "late")
    rxvision(e2e_env, "incidents", "ack", incident["id"], "--by", "drill-oncall")
    (acked,) = [i for i in incidents(e2e_env, "--state", "acked") if i["id"] == incident["id"]]
    assert acked["acked_by"] == "drill-oncall"

    # the next run is on time: its `late` succeeding within budget resolves the incident
    again = client.trigger(DRILL.dag_id, {"sleep_s": 0})
    assert client.wait_for_run(DRILL.dag_id, again, timeout_s=300) == "success"
    resolved = wait_for(
        lambda: [i for i in incidents(e2e_env, "--state", "resolved") if i["id"] == incident["id"]],
        timeout=60,
        what="the SLA incident resolved by the on-time run",
    )
    assert resolved[0]["resolution"] and again in str(resolved[0]["events"])
    resolves = wait_for(
        lambda: [
            b
            for b in webhook.received
            if b.get("event_action") == "resolve" and b.get("dedup_key") == key
        ],
        timeout=30,
        what="the resolve event at the webhook",
    )
    assert len(resolves) == 1
