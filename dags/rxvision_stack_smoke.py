"""A two-task DAG that proves the stack's Airflow runs tasks (used by `rxvision stack check`).

It does no work; when it fails, read the task log in the Airflow UI: the scheduler,
executor or the DAG folder is misconfigured.

It carries no deadline alerts: it is also the DAG that `airflow dags test` runs in the
tests, and `dags test` fails on any DAG with deadline alerts (Airflow 3.3: "'dict'
object has no attribute 'hex'"). Its tasks keep their hard limits.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from rxvision.pipeline.config import load_pipeline_config
from rxvision_airflow.sla import default_args, task_limits

CFG = load_pipeline_config()
S = CFG.smoke


@dag(
    dag_id=S.dag_id,
    schedule=S.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["rxvision", "smoke"],
    doc_md=__doc__,
    default_args=default_args(CFG),
)
def rxvision_stack_smoke() -> None:
    @task(**task_limits(CFG, S, "ping"))
    def ping() -> str:
        return "pong"

    @task(**task_limits(CFG, S, "echo"))
    def echo(value: str) -> str:
        if value != "pong":
            raise ValueError(f"expected 'pong' from ping, got {value!r}")
        return value

    echo(ping())


rxvision_stack_smoke()
