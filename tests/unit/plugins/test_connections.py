"""Connections to variables: per-component S3 connections, and ``role_arn`` assumed
through STS. No STS server runs here: botocore's Stubber checks the exact AssumeRole
request a real client sends and answers as AWS documents it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from botocore.stub import Stubber

pytest.importorskip("airflow")
from rxvision.pipeline.config import Connections, load_pipeline_config
from rxvision_airflow import connections

pytestmark = pytest.mark.unit

ROLE = "arn:aws:iam::123456789012:role/rxvision-scoring"


def _aws_conn(
    extra: dict[str, Any], login: str = "AKWORKER", password: str = "worker-secret"
) -> str:
    return json.dumps({"conn_type": "aws", "login": login, "password": password, "extra": extra})


@pytest.fixture
def stubbed_sts(monkeypatch: pytest.MonkeyPatch) -> Stubber:
    client = connections.sts_client({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}, {})
    stubber = Stubber(client)
    seen: list[dict[str, Any]] = []

    def fake_client(base: dict[str, str], extra: dict[str, Any]) -> Any:
        seen.append(base)
        return client

    monkeypatch.setattr(connections, "sts_client", fake_client)
    stubber.seen = seen  # type: ignore[attr-defined]
    return stubber


def test_role_arn_gives_the_tasks_the_roles_temporary_credentials(
    monkeypatch: pytest.MonkeyPatch, stubbed_sts: Stubber
) -> None:
    extra = {
        "role_arn": ROLE,
        "assume_role_kwargs": {"DurationSeconds": 1800},
        "endpoint_url": "http://127.0.0.1:9000",
    }
    monkeypatch.setenv("AIRFLOW_CONN_RXVISION_S3_SCORING", _aws_conn(extra))
    stubbed_sts.add_response(
        "assume_role",
        {
            "Credentials": {
                "AccessKeyId": "ASIATEMPORARYKEY0001",
                "SecretAccessKey": "temporary-secret",
                "SessionToken": "session-token",
                "Expiration": dt.datetime(2026, 11, 27, 2, 0, tzinfo=dt.UTC),
            }
        },
        {
            "RoleArn": ROLE,
            "RoleSessionName": "rxvision-rxvision_s3_scoring",
            "DurationSeconds": 1800,
        },
    )
    with stubbed_sts:
        env = connections.s3_env("rxvision_s3_scoring")
    stubbed_sts.assert_no_pending_responses()
    assert env["AWS_ACCESS_KEY_ID"] == "ASIATEMPORARYKEY0001"
    assert env["AWS_SECRET_ACCESS_KEY"] == "temporary-secret"
    assert env["AWS_SESSION_TOKEN"] == "session-token"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:9000"
    # the connection's own keys signed the AssumeRole call
    assert stubbed_sts.seen[0]["AWS_ACCESS_KEY_ID"] == "AKWORKER"  # type: ignore[attr-defined]
    public, secret = connections.split_secrets(env)
    assert "AWS_SESSION_TOKEN" in secret and "AWS_SESSION_TOKEN" not in public


def test_refused_assume_role_fails_the_task(
    monkeypatch: pytest.MonkeyPatch, stubbed_sts: Stubber
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_RXVISION_S3", _aws_conn({"role_arn": ROLE}))
    stubbed_sts.add_client_error("assume_role", "AccessDenied", "not authorized", 403)
    with stubbed_sts, pytest.raises(Exception, match="AccessDenied"):
        connections.s3_env("rxvision_s3")


def test_connection_without_role_arn_passes_its_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_RXVISION_S3", _aws_conn({"region_name": "eu-west-1"}))
    env = connections.s3_env("rxvision_s3")
    assert env["AWS_ACCESS_KEY_ID"] == "AKWORKER"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert "AWS_SESSION_TOKEN" not in env


def test_each_component_reads_its_own_connection() -> None:
    conns = Connections(s3_scoring="rxvision_s3_scoring")
    assert conns.s3_for("scoring") == "rxvision_s3_scoring"
    assert conns.s3_for("training") == "rxvision_s3"  # null: the worker's
    assert conns.s3_for("worker") == "rxvision_s3"
    with pytest.raises(ValueError, match="unknown component 'gpu'"):
        conns.s3_for("gpu")


def test_task_env_uses_the_components_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_RXVISION_S3", _aws_conn({}, login="AKWORKER"))
    monkeypatch.setenv("AIRFLOW_CONN_RXVISION_S3_TRAIN", _aws_conn({}, login="AKTRAIN"))
    cfg = load_pipeline_config(overrides=["connections.s3_training=rxvision_s3_train"])
    assert connections.task_env(cfg, "training")["AWS_ACCESS_KEY_ID"] == "AKTRAIN"
    assert connections.task_env(cfg, "worker")["AWS_ACCESS_KEY_ID"] == "AKWORKER"
