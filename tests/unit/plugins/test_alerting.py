"""The failure callback: a failed task pages the webhook named by the Airflow connection."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from http_receiver import Receiver

pytest.importorskip("airflow.sdk")

from rxvision.home import repo_root
from rxvision_airflow.alerting import on_task_failure

pytestmark = pytest.mark.unit


def test_failed_task_pages_the_webhook_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = yaml.safe_load((repo_root() / "configs" / "pipeline.yaml").read_text())
    cfg["alerts_uri"] = None  # no S3 here
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    receiver = Receiver([])
    monkeypatch.setenv("RXVISION_PIPELINE_CONFIG", str(path))
    monkeypatch.setenv(
        "AIRFLOW_CONN_RXVISION_ALERTS", f'{{"conn_type": "http", "host": "{receiver.url}"}}'
    )
    monkeypatch.delenv("STATSD_HOST", raising=False)
    ti = SimpleNamespace(
        dag_id="rxvision_batch_scoring",
        task_id="score_shard",
        map_index=3,
        run_id="manual__7",
        try_number=3,
        log_url="http://127.0.0.1:1/log",
    )
    try:
        on_task_failure({"ti": ti, "exception": RuntimeError("S3 said 503")})
    finally:
        receiver.close()
    (body,) = receiver.bodies
    # the try number is in the key: a task cleared and failing again pages again
    assert body["dedup_key"] == "task_failed:rxvision_batch_scoring:manual__7:score_shard[3]:try3"
    assert "score_shard[3] failed after 3 tries: S3 said 503" in body["text"]
    assert body["payload"]["custom_details"]["log_url"] == "http://127.0.0.1:1/log"
