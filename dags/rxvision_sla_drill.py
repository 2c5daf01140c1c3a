"""
### RxVision SLA drill

Proves that on-call hears about late tasks, end to end: `on_time` finishes within its
budget (its deadline fires and decides not to alert); `late` sleeps `sleep_s` seconds,
past its budget, so its deadline callback alerts the webhook, statsd and the alert
records. Trigger it by hand after changing the alerting setup; `sleep_s=0` runs it
quietly.

| task | budget | when it fails |
|---|---|---|
| `on_time` | `drill.sla_s.on_time` | the scheduler or workers are not running tasks |
| `late` | `drill.sla_s.late` | it only sleeps: a failure means the worker died |
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task

from rxvision.pipeline.config import load_pipeline_config
from rxvision_airflow.sla import default_args, task_deadline_alerts, task_limits

CFG = load_pipeline_config()
S = CFG.drill


@dag(
    dag_id=S.dag_id,
    schedule=S.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["rxvision", "oncall", "drill"],
    doc_md=__doc__,
    default_args=default_args(CFG),
    deadline=task_deadline_alerts(S),
    params={"sleep_s": Param(50, type="number", minimum=0, description="How long `late` sleeps")},
)
def rxvision_sla_drill() -> None:
    @task(**task_limits(CFG, S, "on_time"))
    def on_time() -> str:
        return "on time"

    @task(**task_limits(CFG, S, "late"))
    def late(params: dict[str, Any] | None = None) -> float:
        seconds = float((params or {}).get("sleep_s", 0))
        time.sleep(seconds)
        return seconds

    on_time() >> late()


rxvision_sla_drill()
