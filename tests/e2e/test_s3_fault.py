"""The S3 server killed while the scoring DAG runs: the failed task's retry succeeds
once S3 is back, and the predictions hold each image exactly once."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest
from e2e_helpers import MODEL, read_parquet, wait_for
from mlflow.tracking import MlflowClient

from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.config import load_pipeline_config
from rxvision.pipeline.end_to_end import DemoData
from rxvision.stack.local_stack import LocalStack
from rxvision.storage.s3 import S3Store

# the first test also waits for the package fixtures: the stack and the main job, whose
# training (the shipped recipe at 60 epochs: MAIN_JOB_EPOCHS) takes 4-12 minutes on 2 cores
pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(3600)]

CFG = load_pipeline_config()


def _running(client: AirflowClient, run_id: str) -> list[dict[str, Any]]:
    tis = client.task_instances(CFG.scoring.dag_id, run_id)
    return [t for t in tis if t["state"] == "running"]


def test_s3_killed_mid_task_then_retry_succeeds_without_duplicates(
    main_job: dict[str, Any],
    client: AirflowClient,
    e2e_stack: LocalStack,
    e2e_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, e2e_env[key])
    registry = MlflowClient(e2e_env["MLFLOW_TRACKING_URI"])
    versions_before = len(registry.search_model_versions(f"name='{MODEL}'"))

    # full: the main job already scored every image (incremental would plan nothing);
    # no_cache: every shard really scores, so the fault meets a task at work
    run_id = client.trigger(CFG.scoring.dag_id, {"full": True, "no_cache": True})
    running = wait_for(lambda: _running(client, run_id), 120, "a running scoring task", 0.2)
    pid = e2e_stack.process("seaweedfs").pid()
    assert pid, "seaweedfs is not running"
    os.kill(pid, signal.SIGKILL)
    # S3 stays down until a task has failed on it (boto3's own retries ride out a short
    # outage); then it comes back on the same ports and the task's retry must succeed
    failed = wait_for(
        lambda: [
            t
            for t in client.task_instances(CFG.scoring.dag_id, run_id)
            if t["state"] in ("up_for_retry", "failed")
        ],
        240,
        "a scoring task to fail while S3 is down",
        1.0,
    )
    e2e_stack.up(timeout_s=120)

    assert client.wait_for_run(CFG.scoring.dag_id, run_id, timeout_s=600) == "success"
    tis = client.task_instances(CFG.scoring.dag_id, run_id)
    tries = {(t["task_id"], t.get("map_index")): t["try_number"] for t in tis}
    for t in failed:
        assert tries[(t["task_id"], t.get("map_index"))] >= 2, (running, tries)

    store = S3Store()
    latest = json.loads(store.get_bytes(CFG.scoring.latest_uri))
    assert latest["dag_run_id"] == run_id
    manifest = json.loads(store.get_bytes(f"{latest['uri']}/_manifest.json"))
    rows = [r for s in manifest["shards"] for r in read_parquet(store, s["uri"])]
    keys = [r["key"] for r in rows]
    demo = DemoData()
    assert len(keys) == len(set(keys)) == demo.classes * demo.incoming_per_class + 1
    assert [r["key"].rsplit("/", 1)[-1] for r in rows if r["error"]] == ["corrupt-0001.jpg"]
    assert len(registry.search_model_versions(f"name='{MODEL}'")) == versions_before
