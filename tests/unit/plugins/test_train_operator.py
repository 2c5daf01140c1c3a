"""The train operator: the command it runs, credentials kept out of the rendered
environment, the dev image's read-only mounts, GPUs only where the engine has them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("airflow.providers.docker")

from rxvision.home import repo_root
from rxvision.pipeline.config import load_pipeline_config
from rxvision_airflow.operators import RxVisionTrainOperator, dev_mounts, parse_size

pytestmark = pytest.mark.unit

S3_CONN = (
    '{"conn_type": "aws", "login": "AKIAEXAMPLE", "password": "secret-key-123", '
    '"extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-1"}}'
)


def make(overrides: str = "", **cfg_overrides: str) -> RxVisionTrainOperator:
    cfg = load_pipeline_config(overrides=[f"{k}={v}" for k, v in cfg_overrides.items()])
    return RxVisionTrainOperator(
        task_id="train",
        data_uri="s3://rxvision-data/features/abc",
        train_run_id="af-123",
        summary_uri="s3://rxvision-artifacts/runs/af-123/train_summary.json",
        snapshot_rev="synthetic-v1",
        snapshot_hash="f00d",
        overrides=overrides,
        pipeline_config=cfg,
    )


def test_train_args_name_config_data_run_and_summary() -> None:
    op = make("training.epochs=2")
    assert op.train_args() == [
        "--config", str(repo_root() / "configs" / "cpu-quick.yaml"),
        "--data", "s3://rxvision-data/features/abc",
        "--run-id", "af-123",
        "--summary", "s3://rxvision-artifacts/runs/af-123/train_summary.json",
        "--snapshot-rev", "synthetic-v1",
        "--snapshot-hash", "f00d",
        "training.epochs=2",
    ]  # fmt: skip
    assert make("").train_args()[-1] == "f00d"  # an empty override adds nothing


def test_docker_defaults_from_config() -> None:
    op = make()
    assert op.image == "rxvision-train:dev"
    assert op.shm_size == 2 * 1024**3
    assert op.auto_remove == "force" and op.network_mode == "host"
    assert "data_uri" in op.template_fields and "command" in op.template_fields


def test_credentials_go_to_private_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_RXVISION_S3", S3_CONN)
    hook = "https://hooks.example.com/services/T0/SECRETPATH"
    monkeypatch.setenv("AIRFLOW_CONN_RXVISION_ALERTS", f'{{"conn_type": "http", "host": "{hook}"}}')
    monkeypatch.setenv("RXVISION_GIT_COMMIT", "abc123")
    op = make(**{"train_launcher.gpus": "0"})
    op._prepare_container("docker-dev", op.train_args(), op.run_env())
    assert op._private_environment == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret-key-123",
        # training's threshold alerts page through it: a secret, never rendered
        "RXVISION_ALERT_WEBHOOK_URL": hook,
    }
    assert "secret-key-123" not in repr(op.environment)
    assert "SECRETPATH" not in repr(op.environment)
    assert op.environment["AIRFLOW_CTX_TASK_ID"] == "train"
    assert op.environment["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:9"
    assert op.environment["RXVISION_CHECKPOINT_ROOT"] == "s3://rxvision-checkpoints"
    assert op.environment["RXVISION_GIT_COMMIT"] == "abc123"
    assert op.device_requests is None
    assert op.entrypoint == [str(Path(sys.prefix) / "bin" / "rxvision"), "train"]
    assert op.command[:2] == ["--config", str(repo_root() / "configs" / "cpu-quick.yaml")]
    assert op.container_name == "rxvision-train-af-123"  # one container per training run


def test_a_gpu_count_is_requested_as_is() -> None:
    op = make(**{"train_launcher.gpus": "2"})
    (request,) = op._gpu_requests() or []
    assert request["Count"] == 2 and request["Capabilities"] == [["gpu"]]


def test_dev_mounts_are_read_only_and_not_nested() -> None:
    mounts = dev_mounts()
    targets = [m["Target"] for m in mounts]
    assert str(repo_root().resolve()) in targets
    assert all(m["ReadOnly"] and m["Source"] == m["Target"] for m in mounts)
    for t in targets:
        assert not any(t != o and t.startswith(o + "/") for o in targets)


@pytest.mark.parametrize(
    ("text", "size"),
    [("2g", 2 * 1024**3), ("512m", 512 * 1024**2), ("1024", 1024), ("1.5GB", int(1.5 * 1024**3))],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size
