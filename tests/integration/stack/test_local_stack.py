"""The local stack's servers are the real ones, and the stack survives restarts and kills."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import mlflow
import pytest
import requests
import statsd
from botocore.config import Config
from botocore.exceptions import ClientError

from rxvision.stack.local_stack import LocalStack
from rxvision.stack.process import is_alive, wait_until
from rxvision.stack.selfcheck import SMOKE_DAG, airflow_client
from rxvision.storage.s3 import S3Config, S3Store

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
RXVISION = [sys.executable, "-m", "rxvision.cli"]


def boto3_client(env: dict[str, str], secret: str | None = None) -> object:
    # Plain boto3 with only the standard variables: what a user's own scripts do.
    return boto3.client(
        "s3",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
        config=Config(signature_version="s3v4", retries={"max_attempts": 1}),
    )


def test_boto3_round_trip_with_standard_variables(stack_env: dict[str, str]) -> None:
    s3 = boto3_client(stack_env)  # endpoint from AWS_ENDPOINT_URL_S3, nothing else
    key = f"it/{uuid.uuid4().hex}.bin"
    body = os.urandom(200_000)
    s3.put_object(Bucket="rxvision-data", Key=key, Body=body)  # type: ignore[attr-defined]
    got = s3.get_object(Bucket="rxvision-data", Key=key)["Body"].read()  # type: ignore[attr-defined]
    assert got == body


def test_wrong_secret_is_refused_with_403(stack_env: dict[str, str]) -> None:
    s3 = boto3_client(stack_env, secret="not-the-secret")
    with pytest.raises(ClientError) as err:
        s3.list_objects_v2(Bucket="rxvision-data")  # type: ignore[attr-defined]
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_up_created_every_bucket(stack_env: dict[str, str], stack: LocalStack) -> None:
    names = {b["Name"] for b in boto3_client(stack_env).list_buckets()["Buckets"]}  # type: ignore[attr-defined]
    assert set(stack.config.s3.buckets) <= names


def test_mlflow_artifact_is_an_object_in_the_s3_bucket(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    mlflow.set_tracking_uri(stack_env["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("it_stack")
    (tmp_path / "notes.txt").write_text("hello from the integration tier\n")
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_artifact(str(tmp_path / "notes.txt"))
    keys = list(S3Store(S3Config.from_env()).list_keys("s3://rxvision-artifacts/"))
    mine = [k for k in keys if run.info.run_id in k]
    assert any(k.endswith("/artifacts/notes.txt") for k in mine), mine
    assert mlflow.get_run(run.info.run_id).data.params == {"alpha": "0.5"}


def test_airflow_api_health_reports_every_part_healthy(stack: LocalStack) -> None:
    url = stack.urls()["airflow"] + "/api/v2/monitor/health"
    health = requests.get(url, timeout=5).json()
    for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[part]["status"] == "healthy", health


def test_airflow_dags_test_runs_the_smoke_dag(stack: LocalStack) -> None:
    # `dags test` runs the DAG's tasks in its own process, while the stack's scheduler
    # also queues the tasks of every running run of an unpaused DAG: both would start
    # `ping`, and the loser fails ("TI was not in a state where it could be marked as
    # running"). Paused, the DAG is left to `dags test` alone.
    client = airflow_client(stack)
    client.wait_for_dag(SMOKE_DAG)
    client.request("PATCH", f"/dags/{SMOKE_DAG}", json={"is_paused": True})
    try:
        proc = subprocess.run(
            [str(REPO / ".venv" / "bin" / "airflow"), "dags", "test", SMOKE_DAG],
            env=stack.airflow_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        client.request("PATCH", f"/dags/{SMOKE_DAG}", json={"is_paused": False})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "state=success" in out.replace(" ", "") or "success" in out.lower()


def test_statsd_counter_sent_is_shown_by_the_stack(stack: LocalStack, cli_env: dict) -> None:
    env = stack.client_env()
    name = f"rxvision.it.counter_{uuid.uuid4().hex[:6]}"
    client = statsd.StatsClient(env["STATSD_HOST"], int(env["STATSD_PORT"]))
    client.incr(name, 2)
    client.incr(name, 5)
    client.timing("rxvision.it.latency", 12.5)
    assert wait_until(lambda: stack.metrics()["counters"].get(name) == 7, 10)
    proc = subprocess.run(
        [*RXVISION, "stack", "metrics", "--json", "--prefix", "rxvision.it"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    shown = json.loads(proc.stdout)
    assert shown["counters"][name] == 7
    assert shown["timers"]["rxvision.it.latency"]["count"] >= 1


def test_airflow_sends_its_own_metrics_under_the_project_prefix(stack: LocalStack) -> None:
    assert wait_until(
        lambda: any(k.startswith("rxvision.airflow.") for k in stack.metrics()["counters"]), 60
    )


def test_stack_check_passes_with_a_dag_run_through_the_scheduler(cli_env: dict) -> None:
    proc = subprocess.run(
        [*RXVISION, "stack", "check"], env=cli_env, capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "succeeded through the scheduler" in proc.stdout.replace("\n", " ") or "ok" in proc.stdout
    )


def test_every_listening_socket_of_the_stack_is_on_loopback(stack: LocalStack) -> None:
    sockets = stack.listening_sockets()
    servers = {name for name, *_ in sockets}
    # the S3, MLflow and Airflow API ports at least; log servers are off (no 8793/8794)
    assert {"seaweedfs", "mlflow", "airflow-api-server"} <= servers, sockets
    assert all(ipaddress.ip_address(ip).is_loopback for _, _, ip, _ in sockets), sockets
    assert not [s for s in sockets if s[0] in ("airflow-scheduler", "airflow-triggerer")]


def test_up_created_the_one_slot_pools(stack: LocalStack) -> None:
    from rxvision.pipeline.pools import POOLS
    from rxvision.stack.selfcheck import airflow_client

    client = airflow_client(stack)
    for pool in POOLS:
        assert client.request("GET", f"/pools/{pool.name}")["slots"] == pool.slots == 1


def test_up_twice_starts_nothing(stack: LocalStack) -> None:
    report = stack.up(timeout_s=60)
    assert report.started == []
    assert len(report.already_running) == 7


def test_status_json_shows_every_server_healthy(cli_env: dict) -> None:
    proc = subprocess.run(
        [*RXVISION, "stack", "status", "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert all(s["healthy"] for s in info["servers"].values()), info
    # the engine the nightly's train task needs is part of the stack's health
    assert info["docker"]["launcher"] == "docker-dev" and info["docker"]["running"], info
    assert info["docker"]["detail"].startswith("Docker "), info


def test_a_stack_whose_train_launcher_needs_a_missing_engine_is_not_healthy(
    cli_env: dict,
) -> None:
    # the launcher pointed at a socket where no engine answers: what a reboot leaves
    env = {**cli_env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    proc = subprocess.run(
        [*RXVISION, "stack", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "docker engine (docker-dev launcher): NOT RUNNING" in " ".join(proc.stdout.split())
    local = {**env, "RXVISION_TRAIN_LAUNCHER": "local"}
    proc = subprocess.run(
        [*RXVISION, "stack", "status", "--json"],
        env=local,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["docker"]["needed"] is False


def test_env_exports_work_for_a_fresh_shell(cli_env: dict) -> None:
    count_buckets = "import boto3; print(len(boto3.client('s3').list_buckets()['Buckets']))"
    exports = f"{sys.executable} -m rxvision.cli stack env"
    script = f'eval "$({exports})"; {sys.executable} -c "{count_buckets}"'

    env = {k: v for k, v in cli_env.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    proc = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip().splitlines()[-1]) >= 4


def test_s3_data_survives_sigkill_and_up_recovers(stack: LocalStack, stack_env: dict) -> None:
    store = S3Store(S3Config.from_env())
    uri = f"s3://rxvision-data/it/survivor-{uuid.uuid4().hex}"
    store.put_bytes(uri, b"still here")
    pid = stack.process("seaweedfs").pid()
    assert pid is not None
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert wait_until(lambda: not is_alive(pid), 10)
    report = stack.up(timeout_s=120)
    assert report.started == ["seaweedfs"]
    assert S3Store(S3Config.from_env()).get_bytes(uri) == b"still here"


def test_sigkill_of_mlflow_then_up_restarts_only_mlflow(stack: LocalStack) -> None:
    pid = stack.process("mlflow").pid()
    assert pid is not None
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert wait_until(lambda: not is_alive(pid), 10)
    report = stack.up(timeout_s=120)
    assert report.started == ["mlflow"]
    assert requests.get(stack.urls()["mlflow"] + "/health", timeout=5).status_code == 200
