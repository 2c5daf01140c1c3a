"""A two-task DAG that proves the stack's Airflow runs tasks (used by `rxvision stack check`).

It does no work; when it fails, read the task log in the Airflow UI: the scheduler,
executor or the DAG folder is misconfigured.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task


@dag(
    dag_id="rxvision_stack_smoke",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["rxvision", "smoke"],
    doc_md=__doc__,
    default_args={
        "owner": "ml-platform",
        "retries": 1,
        "retry_delay": timedelta(seconds=5),
        "execution_timeout": timedelta(minutes=2),
    },
)
def rxvision_stack_smoke() -> None:
    @task
    def ping() -> str:
        return "pong"

    @task
    def echo(value: str) -> str:
        if value != "pong":
            raise ValueError(f"expected 'pong' from ping, got {value!r}")
        return value

    echo(ping())


rxvision_stack_smoke()
