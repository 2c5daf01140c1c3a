"""Scale-out on Airflow's CeleryExecutor: the nightly DAG's train task runs on the `gpu`
worker, every other task on the `default` one, scoring fans out over mapped shards; a
worker SIGKILLed mid-task loses nothing: its task is retried and each row lands once."""

from __future__ import annotations

import contextlib
import ipaddress
import math
from typing import Any

import pytest
from e2e_helpers import MODEL, kill_session, published_rows, wait_for
from mlflow.tracking import MlflowClient

from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.config import load_pipeline_config
from rxvision.pipeline.end_to_end import DemoData
from rxvision.stack import scale
from rxvision.stack.local_stack import LocalStack
from rxvision.storage.s3 import S3Store

# the first test also waits for the package fixtures: the stack and the main job (its
# training 3 epochs: conftest.EPOCHS)
pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(2400)]

CFG = load_pipeline_config()
# the incoming photos of each product and one corrupt file
INCOMING_IMAGES = DemoData().classes * DemoData().incoming_per_class + 1


def _tis(client: AirflowClient, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    return client.task_instances(dag_id, run_id)


def _worker_of(ti: dict[str, Any]) -> str:
    """The worker name a task instance recorded (``name@host``)."""
    return str(ti.get("hostname") or "").partition("@")[0]


@pytest.fixture
def s3_env(scale_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, scale_env[key])


def test_stack_runs_celery_on_postgres_and_redis(scale_stack: LocalStack) -> None:
    status = scale_stack.status()
    assert status["profile"] == "scale"
    assert all(s["healthy"] for s in status["servers"].values()), status["servers"]
    assert {"postgres", "redis", "airflow-worker-default", "airflow-worker-gpu"} <= set(
        status["servers"]
    )
    env = scale_stack.airflow_env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    answering = scale.celery_workers_answering(scale_stack.layout())
    assert answering == {scale.celery_node_name("default"), scale.celery_node_name("gpu")}
    # every listening TCP socket of the scale profile is on loopback
    sockets = scale_stack.listening_sockets()
    assert {"postgres", "redis", "mlflow", "airflow-api-server"} <= {s[0] for s in sockets}
    assert all(ipaddress.ip_address(ip).is_loopback for _, _, ip, _ in sockets), sockets


def test_nightly_tasks_ran_on_their_queues_workers(
    scale_main_job: dict[str, Any], scale_client: AirflowClient
) -> None:
    nightly = scale_main_job["nightly"]
    assert nightly["state"] == "success" and nightly["promoted"] is True
    tis = _tis(scale_client, CFG.nightly.dag_id, nightly["run_id"])
    workers = {t["task_id"]: (_worker_of(t), t["queue"]) for t in tis}
    assert workers.pop("train") == ("gpu", "gpu")
    assert workers and set(workers.values()) == {("default", "default")}, workers


def test_scoring_fanned_out_over_mapped_shards(
    scale_main_job: dict[str, Any], scale_client: AirflowClient, s3_env: None
) -> None:
    scoring = scale_main_job["scoring"]
    assert scoring["state"] == "success" and scoring["asset_triggered"] is True
    shards = [
        t
        for t in _tis(scale_client, CFG.scoring.dag_id, scoring["run_id"])
        if t["task_id"] == "score_shard"
    ]
    assert len(shards) == math.ceil(INCOMING_IMAGES / 8)  # shards of 8 images
    assert {_worker_of(t) for t in shards} == {"default"}
    latest, rows = published_rows(S3Store(), CFG.scoring.latest_uri)
    assert latest["dag_run_id"] == scoring["run_id"]
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == INCOMING_IMAGES


def _query(uri: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg2

    with contextlib.closing(psycopg2.connect(uri)) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def test_mlflow_and_airflow_keep_their_state_in_postgres(
    scale_main_job: dict[str, Any], scale_stack: LocalStack
) -> None:
    layout = scale_stack.layout()
    mlflow_db = scale.postgres_uri(layout, "mlflow", "postgresql")
    airflow_db = scale.postgres_uri(layout, "airflow", "postgresql")
    versions = _query(mlflow_db, "SELECT count(*) FROM model_versions WHERE name = %s", MODEL)
    assert versions[0][0] >= 1
    hosts = _query(
        airflow_db,
        "SELECT DISTINCT hostname FROM task_instance WHERE dag_id = %s",
        CFG.nightly.dag_id,
    )
    assert {h.partition("@")[0] for (h,) in hosts} == {"default", "gpu"}


def test_worker_killed_mid_task_is_retried_and_rows_written_once(
    scale_main_job: dict[str, Any],
    scale_client: AirflowClient,
    scale_stack: LocalStack,
    scale_env: dict[str, str],
    s3_env: None,
) -> None:
    registry = MlflowClient(scale_env["MLFLOW_TRACKING_URI"])
    versions_before = len(registry.search_model_versions(f"name='{MODEL}'"))
    # full: the main job already scored every image (incremental would plan nothing);
    # no_cache: every shard really scores, so the fault meets a task at work
    run_id = scale_client.trigger(CFG.scoring.dag_id, {"full": True, "no_cache": True})

    def shard_running_on_default() -> list[dict[str, Any]]:
        return [
            t
            for t in _tis(scale_client, CFG.scoring.dag_id, run_id)
            if t["task_id"] == "score_shard"
            and t["state"] == "running"
            and _worker_of(t) == "default"
        ]

    victims = wait_for(shard_running_on_default, 300, "a shard running on the default worker", 0.2)
    worker = scale_stack.process(scale.worker_server_name("default"))
    pid = worker.pid()
    assert pid, "the default worker is not running"
    kill_session(pid)  # the worker, its pool and the task's processes: a lost host
    # the victim is a shard still running once its worker is dead (its state stays
    # `running` until its heartbeats are missed): the one seen first may have finished
    # between that look and the kill
    killed = shard_running_on_default()
    assert killed, f"{victims[0]['map_index']} finished before the kill; none left running"

    # Without heartbeats the scheduler fails the task and schedules its retry; the worker
    # comes back as a supervisor (systemd, compose `restart:`) would bring it back.
    victim = (killed[0]["task_id"], killed[0]["map_index"])
    wait_for(
        lambda: [
            t
            for t in _tis(scale_client, CFG.scoring.dag_id, run_id)
            if (t["task_id"], t["map_index"]) == victim
            and t["state"] in ("up_for_retry", "queued", "scheduled", "failed")
        ],
        180,
        "the killed worker's task to be failed for lost heartbeats",
        1.0,
    )
    scale_stack.up(timeout_s=180)

    assert scale_client.wait_for_run(CFG.scoring.dag_id, run_id, timeout_s=900) == "success"
    tis = {
        (t["task_id"], t["map_index"]): t for t in _tis(scale_client, CFG.scoring.dag_id, run_id)
    }
    assert tis[victim]["try_number"] >= 2
    assert tis[victim]["state"] == "success"
    latest, rows = published_rows(S3Store(), CFG.scoring.latest_uri)
    assert latest["dag_run_id"] == run_id
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == INCOMING_IMAGES
    assert [r["key"].rsplit("/", 1)[-1] for r in rows if r["error"]] == ["corrupt-0001.jpg"]
    assert len(registry.search_model_versions(f"name='{MODEL}'")) == versions_before
