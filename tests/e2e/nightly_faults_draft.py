"""DRAFT, not collected (the file name has no ``test_`` prefix): see the session note of
2026-12-02 in the issues. Its S3 and scheduler faults worked; the MLflow one does not yet:
`rxvision stack up` (run after each kill) re-imports the Airflow pools, so the register
pool closed to time the MLflow kill is opened again by the scheduler's restart. Next:
close the pool after that `stack up` with a training run long enough to outlast it, then
rename this file ``test_nightly_faults.py``. The backfill test lives in
test_nightly_overlap.py.

The nightly DAG through the real scheduler while its stack fails under it: SeaweedFS
killed during `preprocess`, the scheduler killed -9 during `train`, MLflow killed as
`register` starts (its pool closed until then, so the kill does not race it); after each
`stack up` the run completes, each failed task retried.
(S3 is killed in `preprocess`, not `pull_snapshot`: a worker pulling a snapshot it holds
already is served from its own cache and never asks S3; `preprocess` reads and writes the
feature store in S3 whatever it holds.)
Then a manual run and a backfill overlap: the pools keep their `train` and `register`
apart.

The runs retrain the demo snapshot for 2 epochs (`force_retrain`, `epochs`): the faults
need a run at work, not a good model. The gates refuse such a model before anything is
registered, so each run must end with no new model version and the champion unchanged
(that a retried `register` of a good model maps to one version is shown against the real
registry in tests/integration/registry)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import MODEL, wait_for
from mlflow.tracking import MlflowClient

from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.config import load_pipeline_config
from rxvision.pipeline.pools import REGISTER, Pool
from rxvision.stack.local_stack import LocalStack
from rxvision.stack.process import session_of

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(2400)]

CFG = load_pipeline_config()
DAG = CFG.nightly.dag_id
QUICK = {"force_retrain": True, "epochs": 2}


def state_of(client: AirflowClient, run_id: str, task_id: str) -> str | None:
    for ti in client.task_instances(DAG, run_id):
        if ti["task_id"] == task_id:
            return ti["state"]
    return None


def kill(stack: LocalStack, name: str) -> int:
    """SIGKILL one server's main process (its children are left as a crash leaves them)."""
    pid = stack.process(name).pid()
    assert pid, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    return pid


def kill_session(leader: int) -> None:
    """SIGKILL what a killed server left running in its session (its executor's workers)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and session_of(int(entry.name)) == leader:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def set_slots(client: AirflowClient, pool: Pool, slots: int) -> None:
    body = {"pool": pool.name, "slots": slots, "include_deferred": False}
    client.request("PATCH", f"/pools/{pool.name}", json={**body, "description": pool.description})


@pytest.fixture
def register_pool_restored(client: AirflowClient) -> Iterator[None]:
    """Whatever the test does to the register pool, it has its one slot afterwards."""
    yield
    set_slots(client, REGISTER, REGISTER.slots)


def versions_of(registry: MlflowClient, run_ids: set[str]) -> list[Any]:
    return [
        v
        for v in registry.search_model_versions(f"name='{MODEL}'")
        if v.tags.get("airflow.dag_run_id") in run_ids
    ]


def wait_state(
    client: AirflowClient, run_id: str, task_id: str, states: set[str], timeout: float
) -> str:
    return str(
        wait_for(
            lambda: (s := state_of(client, run_id, task_id)) in states and s,
            timeout,
            f"{task_id} of {run_id} in {sorted(states)}",
            0.2,
        )
    )


@pytest.mark.usefixtures("register_pool_restored")
def test_run_survives_s3_scheduler_and_mlflow_killed_under_it(
    main_job: dict[str, Any],
    client: AirflowClient,
    e2e_stack: LocalStack,
    e2e_env: dict[str, str],
) -> None:
    registry = MlflowClient(e2e_env["MLFLOW_TRACKING_URI"])
    champion = registry.get_model_version_by_alias(MODEL, "champion").version
    run_id = client.trigger(DAG, QUICK)

    # SeaweedFS dies under `preprocess`: the task fails, S3 comes back, its retry succeeds
    wait_state(client, run_id, "preprocess", {"running"}, 300)
    kill(e2e_stack, "seaweedfs")
    try:
        wait_state(client, run_id, "preprocess", {"up_for_retry", "failed"}, 240)
    finally:
        e2e_stack.up(timeout_s=180)  # whatever happened: the next tests need S3

    # the scheduler dies -9 while the training container runs; `stack up` starts another
    wait_state(client, run_id, "train", {"running"}, 600)
    set_slots(client, REGISTER, 0)  # register waits (queued) until MLflow is down
    scheduler = kill(e2e_stack, "airflow-scheduler")
    e2e_stack.up(timeout_s=180)
    assert e2e_stack.process("airflow-scheduler").pid() not in (None, scheduler)

    # MLflow dies just before `register` starts: the register pool (one slot) is closed
    # until then, so the kill cannot race the few seconds register takes
    wait_state(client, run_id, "evaluate", {"success"}, 900)
    wait_state(client, run_id, "register", {"scheduled", "queued"}, 60)
    mlflow = kill(e2e_stack, "mlflow")
    set_slots(client, REGISTER, REGISTER.slots)
    try:
        wait_state(client, run_id, "register", {"up_for_retry", "failed"}, 300)
    finally:
        e2e_stack.up(timeout_s=180)

    assert client.wait_for_run(DAG, run_id, timeout_s=900) == "success"
    kill_session(scheduler)
    kill_session(mlflow)
    tries = {t["task_id"]: t["try_number"] for t in client.task_instances(DAG, run_id)}
    assert tries["preprocess"] >= 2 and tries["register"] >= 2, tries
    assert state_of(client, run_id, "register") == "skipped"  # 2 epochs: the gates refuse
    # refused by the gates after its retry: nothing registered, the champion untouched
    assert versions_of(registry, {run_id}) == []
    assert registry.get_model_version_by_alias(MODEL, "champion").version == champion
