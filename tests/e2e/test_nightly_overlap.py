"""Two nightly runs at once through the real scheduler: a manual run and a backfill
(POST /api/v2/backfills, which its own max_active_runs lets past the DAG's
max_active_runs=1). Both pull and validate the same snapshot at the same time and
succeed (intact); the one-slot pools keep their `train` and `register` apart.

The runs retrain the demo snapshot for 2 epochs (`force_retrain`, `epochs`): the gates
refuse such a model before anything is registered, so neither run may add a model
version or move the champion (compare-and-set promotion itself is tested against the
real registry in tests/integration/registry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from e2e_helpers import MODEL, wait_for
from mlflow.tracking import MlflowClient
from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

from rxvision.orchestration.airflow_client import AirflowApiError, AirflowClient
from rxvision.pipeline.config import load_pipeline_config

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(3600)]

DAG = load_pipeline_config().nightly.dag_id
QUICK = {"force_retrain": True, "epochs": 2}


def versions_of(registry: MlflowClient, run_ids: set[str]) -> list[Any]:
    return [
        v
        for v in registry.search_model_versions(f"name='{MODEL}'")
        if v.tags.get("airflow.dag_run_id") in run_ids
    ]


def _sqlite_locked(exc: BaseException) -> bool:
    return isinstance(exc, AirflowApiError) and "Database is locked" in str(exc)


# Airflow answers 503 "Database is locked" to a backfill created on SQLite while the
# scheduler writes (here: the manual run just triggered); nothing was created, so retry
@retry(
    retry=retry_if_exception(_sqlite_locked),
    stop=stop_after_delay(60),
    wait=wait_fixed(2),
    reraise=True,
)
def create_backfill(client: AirflowClient, body: dict[str, Any]) -> Any:
    return client.request("POST", "/backfills", json=body)


def spans(
    client: AirflowClient, run_ids: list[str], task_id: str
) -> list[tuple[datetime, datetime]]:
    """Each run's ``task_id`` from start to end, earliest first."""
    found = []
    for run_id in run_ids:
        (ti,) = [t for t in client.task_instances(DAG, run_id) if t["task_id"] == task_id]
        found.append(
            (datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"]))
        )
    return sorted(found)


def test_a_backfill_overlapping_a_manual_run_is_kept_apart_by_the_pools(
    main_job: dict[str, Any], client: AirflowClient, e2e_env: dict[str, str]
) -> None:
    registry = MlflowClient(e2e_env["MLFLOW_TRACKING_URI"])
    champion = registry.get_model_version_by_alias(MODEL, "champion").version
    manual = client.trigger(DAG, QUICK)
    now = datetime.now(UTC)
    backfill = create_backfill(
        client,
        {
            "dag_id": DAG,
            "from_date": (now - timedelta(days=1, hours=1)).isoformat(),
            "to_date": (now - timedelta(hours=1)).isoformat(),
            "dag_run_conf": QUICK,
            "max_active_runs": 2,
        },
    )
    assert backfill["dag_id"] == DAG
    # the stack has had no other backfill: its runs are this one's (DAGRunResponse has
    # no backfill_id to match on)
    runs = wait_for(
        lambda: client.request("GET", f"/dags/{DAG}/dagRuns", params={"run_type": "backfill"})[
            "dag_runs"
        ],
        60,
        "the backfill's run",
    )
    run_ids = [manual, *(r["dag_run_id"] for r in runs)]
    assert len(run_ids) == 2
    for run_id in run_ids:
        assert client.wait_for_run(DAG, run_id, timeout_s=1200) == "success"
    for task_id in ("train", "register"):  # one slot each: never at the same time
        first, second = spans(client, run_ids, task_id)
        assert first[1] <= second[0], (task_id, first, second)
    assert versions_of(registry, set(run_ids)) == []
    assert registry.get_model_version_by_alias(MODEL, "champion").version == champion
