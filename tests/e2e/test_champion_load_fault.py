"""A transient failure to load the champion, through the real scheduler: MLflow is
killed the moment the scoring DAG's plan succeeded, so every shard's first try cannot
load the pinned champion. Not a last try: the shard raises (no fallback scores it),
Airflow retries it once MLflow is back, and the predictions are the champion's."""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e_helpers import MODEL, kill_session, read_parquet, wait_for
from mlflow.tracking import MlflowClient

from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.config import load_pipeline_config
from rxvision.stack.local_stack import LocalStack
from rxvision.storage.s3 import S3Store

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(3600)]

CFG = load_pipeline_config()
DAG = CFG.scoring.dag_id


def shard_tries(client: AirflowClient, run_id: str) -> dict[int, tuple[str, int]]:
    return {
        t["map_index"]: (t["state"], t["try_number"])
        for t in client.task_instances(DAG, run_id)
        if t["task_id"] == "score_shard"
    }


def test_champion_load_failure_is_retried_and_scored_by_the_champion(
    main_job: dict[str, Any],
    client: AirflowClient,
    e2e_stack: LocalStack,
    e2e_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, e2e_env[key])
    registry = MlflowClient(e2e_env["MLFLOW_TRACKING_URI"])
    champion = registry.get_model_version_by_alias(MODEL, "champion").version

    # full, no_cache: every shard loads the model and scores (nothing served from cache)
    run_id = client.trigger(DAG, {"full": True, "no_cache": True})
    wait_for(
        lambda: any(
            t["task_id"] == "plan_shards" and t["state"] == "success"
            for t in client.task_instances(DAG, run_id)
        ),
        300,
        "plan_shards to succeed",
        0.2,
    )
    pid = e2e_stack.process("mlflow").pid()
    assert pid, "mlflow is not running"
    kill_session(pid)
    try:
        failed = wait_for(
            lambda: [i for i, (s, _) in shard_tries(client, run_id).items() if s == "up_for_retry"],
            300,
            "a shard's first try to fail on the champion's load",
            0.5,
        )
    finally:
        e2e_stack.up(timeout_s=180)

    assert client.wait_for_run(DAG, run_id, timeout_s=900) == "success"
    tries = shard_tries(client, run_id)
    assert all(tries[i][1] >= 2 for i in failed), tries

    store = S3Store()
    latest = json.loads(store.get_bytes(CFG.scoring.latest_uri))
    assert latest["dag_run_id"] == run_id
    manifest = json.loads(store.get_bytes(f"{latest['uri']}/_manifest.json"))
    rows = [r for s in manifest["shards"] for r in read_parquet(store, s["uri"])]
    scored = [r for r in rows if not r["error"]]
    assert scored and all(r["scored_by"] == "primary" for r in scored)
    assert {r["model_version"].rsplit("/", 1)[-1] for r in scored} == {champion}
    assert not any(r["fallback_reason"] for r in rows)
