"""The nightly DAG through the real scheduler while its stack dies under it, each by
SIGKILL: SeaweedFS as `pull_snapshot` starts, the scheduler while the training container
runs, MLflow as `register` starts. After each `rxvision stack up` the run goes on, each
failed task retried by Airflow; at the end exactly one model version is registered for
the run, one MLflow training run and one training container served it, and the
snapshot the worker pulled is intact.

Each kill comes the moment the task before it succeeded (the REST API is polled every
0.2 s, a task process takes seconds to start): the next task meets the dead server,
not a race. A worker serves a snapshot it already holds from its own cache without
asking S3, so the test empties that cache first: the pull must fetch.

The run retrains for a few epochs (`force_retrain`, `epochs`): the faults need a run at
work, not a good model, so the scheduler that replaces the killed one runs its tasks
under gates that pass any model (the scale tier's registry config); the test puts the
shipped gates and the champion back afterwards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_helpers import MODEL, kill_session, wait_for
from mlflow.tracking import MlflowClient

from rxvision.data.packed_snapshot import PackedSnapshot
from rxvision.data.snapshot_shards import MARKER_FILE
from rxvision.home import repo_root
from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.config import load_pipeline_config
from rxvision.stack.local_stack import LocalStack
from rxvision.train.tracking import RUN_ID_TAG

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(3600)]

CFG = load_pipeline_config()
DAG = CFG.nightly.dag_id
# long enough that `train` still runs while the scheduler is killed and brought back
EPOCHS = 6
ANY_MODEL_GATES = repo_root() / "tests" / "scale" / "registry-topology.yaml"


def state_of(client: AirflowClient, run_id: str, task_id: str) -> str | None:
    for ti in client.task_instances(DAG, run_id):
        if ti["task_id"] == task_id:
            return str(ti["state"])
    return None


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


def kill_server(stack: LocalStack, name: str) -> int:
    pid = stack.process(name).pid()
    assert pid, f"{name} is not running"
    kill_session(pid)
    return pid


def train_containers() -> list[str]:
    """`name state` of every training container, running or not."""
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            "name=rxvision-train-",
            "--format",
            "{{.Names}} {{.State}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line]


@pytest.fixture
def shipped_gates_restored(
    e2e_stack: LocalStack, e2e_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[MlflowClient]:
    """Afterwards: the champion and other aliases as they were, and a scheduler whose
    tasks read the shipped gates again (the next tests expect those)."""
    registry = MlflowClient(e2e_env["MLFLOW_TRACKING_URI"])
    aliases = dict(registry.get_registered_model(MODEL).aliases)
    yield registry
    monkeypatch.delenv("RXVISION_REGISTRY_CONFIG", raising=False)
    e2e_stack.up(timeout_s=180)  # whatever a failure left down
    now = registry.get_registered_model(MODEL).aliases
    for alias in set(now) - set(aliases):
        registry.delete_registered_model_alias(MODEL, alias)
    for alias, version in aliases.items():
        registry.set_registered_model_alias(MODEL, alias, version)
    e2e_stack.process("airflow-scheduler").stop()
    e2e_stack.up(timeout_s=180)


def test_run_survives_s3_scheduler_and_mlflow_killed_under_it(
    main_job: dict[str, Any],
    client: AirflowClient,
    e2e_stack: LocalStack,
    shipped_gates_restored: MlflowClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = shipped_gates_restored
    champion = registry.get_model_version_by_alias(MODEL, "champion").version
    # a fresh worker: the pull must fetch from S3
    for cached in ("snapshots", "dvc-cache"):
        shutil.rmtree(e2e_stack.home.cache_dir / cached, ignore_errors=True)
    run_id = client.trigger(DAG, {"force_retrain": True, "epochs": EPOCHS})

    # SeaweedFS dies as `pull_snapshot` starts: its try fails, S3 comes back, the retry pulls
    wait_state(client, run_id, "resolve_snapshot", {"success"}, 300)
    kill_server(e2e_stack, "seaweedfs")
    try:
        wait_state(client, run_id, "pull_snapshot", {"up_for_retry", "failed"}, 300)
    finally:
        e2e_stack.up(timeout_s=180)

    # the scheduler dies -9 while the training container runs; `stack up` starts another,
    # whose tasks read gates that pass a few-epoch model
    wait_state(client, run_id, "train", {"running"}, 900)
    wait_for(
        lambda: any(c.endswith(" running") for c in train_containers()),
        300,
        "the training container running",
        0.5,
    )
    scheduler = e2e_stack.process("airflow-scheduler").pid()
    assert scheduler
    os.kill(scheduler, signal.SIGKILL)  # its task supervisors are left as a crash leaves them
    # asked before `up`: training may finish while the new scheduler starts (the API
    # server has not died, only the scheduler)
    assert state_of(client, run_id, "train") == "running", "train ended before the kill"
    monkeypatch.setenv("RXVISION_REGISTRY_CONFIG", str(ANY_MODEL_GATES))
    e2e_stack.up(timeout_s=180)
    assert e2e_stack.process("airflow-scheduler").pid() not in (None, scheduler)

    # MLflow dies as `register` starts: its try fails, MLflow comes back, the retry registers
    wait_state(client, run_id, "evaluate", {"success"}, 1200)
    kill_server(e2e_stack, "mlflow")
    try:
        wait_state(client, run_id, "register", {"up_for_retry", "failed"}, 420)
    finally:
        e2e_stack.up(timeout_s=180)

    assert client.wait_for_run(DAG, run_id, timeout_s=900) == "success"
    kill_session(scheduler)  # what the killed scheduler left, if anything
    tries = {t["task_id"]: t["try_number"] for t in client.task_instances(DAG, run_id)}
    states = {t["task_id"]: t["state"] for t in client.task_instances(DAG, run_id)}
    assert tries["pull_snapshot"] >= 2 and tries["register"] >= 2, tries
    assert states["register"] == "success", states

    # exactly one version for the run, now the champion; one training run behind it
    versions = [
        v
        for v in registry.search_model_versions(f"name='{MODEL}'")
        if v.tags.get("rxvision.airflow.dag_run_id") == run_id
    ]
    assert len(versions) == 1, [(v.version, v.run_id) for v in versions]
    assert versions[0].version != champion
    assert registry.get_model_version_by_alias(MODEL, "champion").version == versions[0].version
    train_run_id = registry.get_run(versions[0].run_id).data.tags[RUN_ID_TAG]
    runs = registry.search_runs(
        [registry.get_run(versions[0].run_id).info.experiment_id],
        f"tags.`{RUN_ID_TAG}` = '{train_run_id}'",
    )
    assert [r.info.run_id for r in runs] == [versions[0].run_id]
    # one container (named for the training run) served it across the scheduler's death
    containers = [c for c in train_containers() if train_run_id in c]
    assert len(containers) <= 1 and not any(c.endswith(" running") for c in containers)

    # the snapshot the retried pull checked out is whole: every image its marker promises,
    # each with its index's sha256, read in place from the shards (none unpacked)
    (snapshot_dir,) = (e2e_stack.home.cache_dir / "snapshots").iterdir()
    marker = json.loads((snapshot_dir / MARKER_FILE).read_text())
    assert PackedSnapshot(snapshot_dir).verify() == marker["images"], marker
    assert not list(snapshot_dir.rglob("*.jpg"))
