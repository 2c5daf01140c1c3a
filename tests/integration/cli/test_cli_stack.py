"""The CLI against the real stack: it finds the home's running stack by itself, refuses
wrong S3 credentials in one line, and ``status`` shows a refused model as not promoted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from rxvision.home import repo_root
from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.alerts import Alert, AlertSinks
from rxvision.pipeline.config import load_pipeline_config
from rxvision.registry.gates import Criterion, ModelQualityError
from rxvision.stack.local_stack import LocalStack
from rxvision.stack.selfcheck import airflow_client
from rxvision.storage.s3 import S3Config, S3Store

pytestmark = pytest.mark.integration

CPU_QUICK = str(repo_root() / "configs" / "cpu-quick.yaml")


def bare_env(stack: LocalStack, **extra: str) -> dict[str, str]:
    """The test's environment with no endpoint or credential: only RXVISION_HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "AWS_", "RXVISION_AIRFLOW_", "STATSD_"))
    }
    return {**env, "RXVISION_HOME": str(stack.home.root), **extra}


def rxvision(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rxvision.cli", *args],
        env=env,
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def test_model_list_uses_the_running_stack_of_the_home(stack: LocalStack) -> None:
    env = stack.client_env()
    name = f"it-cli-{uuid.uuid4().hex[:6]}"
    MlflowClient(env["MLFLOW_TRACKING_URI"]).create_registered_model(name)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    client.create_model_version(name, source="s3://rxvision-artifacts/nowhere", run_id=None)

    proc = rxvision(bare_env(stack), "model", "list", "--json", f"model_name={name}")

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [v["version"] for v in json.loads(proc.stdout)] == ["1"]
    line = (
        f"using the running stack of {stack.home.root}: MLflow {env['MLFLOW_TRACKING_URI']}, "
        f"S3 {env['AWS_ENDPOINT_URL_S3']}"
    )
    assert line in proc.stderr
    assert env["AWS_SECRET_ACCESS_KEY"] not in proc.stderr + proc.stdout


def test_endpoints_in_the_environment_win_over_the_stack(stack: LocalStack, tmp_path: Path) -> None:
    local = f"sqlite:///{tmp_path / 'mine.db'}"
    proc = rxvision(bare_env(stack, MLFLOW_TRACKING_URI=local), "model", "list", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == []
    assert f"using the store from the environment: MLflow {local}" in proc.stderr


def test_wrong_s3_secret_is_one_line_naming_the_key(stack: LocalStack) -> None:
    env = {**bare_env(stack), **stack.client_env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    proc = rxvision(env, "train", "--config", CPU_QUICK, "--data", "s3://rxvision-data/features/k")

    assert proc.returncode == 12, proc.stderr[-3000:]
    [line] = error_lines(proc)
    assert env["AWS_ACCESS_KEY_ID"] in line
    assert stack.client_env()["AWS_ENDPOINT_URL_S3"].removeprefix("http://") in line
    assert "Traceback" not in proc.stderr
    assert "not-the-secret" not in proc.stderr


def test_missing_bucket_is_one_line_naming_it(stack: LocalStack) -> None:
    env = {**bare_env(stack), **stack.client_env()}
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:6]}"
    proc = rxvision(env, "train", "--config", CPU_QUICK, "--data", f"s3://{bucket}/features/k")

    assert proc.returncode == 4, proc.stderr[-3000:]
    [line] = error_lines(proc)
    assert bucket in line
    assert "Traceback" not in proc.stderr


def _wait_for_dag(stack: LocalStack, dag_id: str, timeout_s: float = 180) -> None:
    client = airflow_client(stack)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.request("GET", f"/dags/{dag_id}")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def _refused_summary() -> str:
    refused = ModelQualityError(
        "models:/rxvision-pill-classifier (run abc)",
        [Criterion("min_top1", 0.62, 0.80, passed=False)],
    )
    return str(refused)


@contextmanager
def nightly_run_marked_successful(stack: LocalStack) -> Iterator[tuple[AirflowClient, str]]:
    """A nightly run triggered while the DAG is paused (its tasks never start), then
    marked successful as a person would: every task that had not run is skipped. Yields
    the client and the run id; the DAG is unpaused after."""
    dag_id = load_pipeline_config().nightly.dag_id
    _wait_for_dag(stack, dag_id)
    client = airflow_client(stack)
    client.request("PATCH", f"/dags/{dag_id}", json={"is_paused": True})
    try:
        run_id = client.trigger(dag_id)
        client.request("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": "success"})
        yield client, run_id
    finally:
        client.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})


def test_status_shows_a_refused_model_as_not_promoted(stack: LocalStack) -> None:
    cfg = load_pipeline_config()
    dag_id = cfg.nightly.dag_id
    # the run as a night whose register task was skipped with a not_promoted alert
    with nightly_run_marked_successful(stack) as (_, run_id):
        env = stack.client_env()
        store = S3Store(
            S3Config(
                endpoint_url=env["AWS_ENDPOINT_URL_S3"],
                access_key=env["AWS_ACCESS_KEY_ID"],
                secret_key=env["AWS_SECRET_ACCESS_KEY"],
            )
        )
        alert = Alert(
            kind="not_promoted",
            dag_id=dag_id,
            run_id=run_id,
            task_id="register",
            summary=_refused_summary(),
            severity="warning",
        )
        AlertSinks(records_uri=cfg.alerts_uri, store=store).send(alert)

        proc = rxvision(bare_env(stack), "status", "--json")
        assert proc.returncode == 0, proc.stderr[-3000:]
        nightly: dict[str, Any] = json.loads(proc.stdout)["dag_runs"][dag_id]
        assert nightly["run_id"] == run_id and nightly["state"] == "success"
        assert nightly["outcome"] == "not promoted"
        assert nightly["failed_gates"].startswith("min_top1: 0.6200 (needs >= 0.8000) FAILED")

        table = rxvision(bare_env(stack, COLUMNS="300"), "status")
        assert table.returncode == 0, table.stderr[-3000:]
        assert "not promoted: min_top1: 0.6200" in table.stdout


def test_status_does_not_call_a_run_marked_by_hand_nothing_new(stack: LocalStack) -> None:
    """A run a person marks successful skips every task that had not run: its first task
    never ran, so the night is not "nothing new" (what status says when that task ran and
    found the champion already trained on the snapshot); with register skipped and no
    alert on record, the model is said refused for an unknown reason."""
    dag_id = load_pipeline_config().nightly.dag_id
    with nightly_run_marked_successful(stack) as (client, run_id):
        resolve = client.request(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/resolve_snapshot"
        )
        assert (resolve["state"], resolve["try_number"]) == ("skipped", 0)

        proc = rxvision(bare_env(stack), "status", "--json")
        assert proc.returncode == 0, proc.stderr[-3000:]
        nightly: dict[str, Any] = json.loads(proc.stdout)["dag_runs"][dag_id]
        assert nightly["run_id"] == run_id
        assert nightly["outcome"] == "not promoted"
        assert nightly["failed_gates"].startswith("unknown: register was skipped")
        assert "reason" not in nightly
