"""Endpoints and credentials from Airflow connections, as the standard variables.

The ``rxvision`` library reads ``AWS_*``, ``AWS_ENDPOINT_URL_S3`` and
``MLFLOW_TRACKING_URI``; tasks build those from the connections named in
``configs/pipeline.yaml`` (never from DAG code). A missing connection leaves the
worker's own environment in charge (an instance profile, a mounted config).

An ``aws`` connection with ``role_arn`` in its extra (the Amazon provider's convention,
with optional ``assume_role_kwargs``) is used through ``sts:AssumeRole``: the task gets
that role's temporary credentials, so each component (training, scoring) runs with its
own least-privilege role while the worker's own role may only assume them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.exceptions import AirflowNotFoundException
from airflow.sdk import BaseHook

from rxvision.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)

# variables that hold secrets: passed to containers as private_environment, never logged
# never rendered or logged: a Slack webhook URL's path is its secret
SECRET_VARS = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "RXVISION_ALERT_WEBHOOK_URL",
    }
)


def _connection(conn_id: str) -> Any | None:
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.info("no Airflow connection %r: using the worker's environment", conn_id)
        return None


def s3_env(conn_id: str) -> dict[str, str]:
    """``AWS_*`` variables from an ``aws`` connection (login/password, extra endpoint_url;
    with extra ``role_arn``, the assumed role's temporary credentials)."""
    conn = _connection(conn_id)
    if conn is None:
        return {}
    extra = conn.extra_dejson or {}
    env = {}
    if conn.login:
        env["AWS_ACCESS_KEY_ID"] = conn.login
    if conn.password:
        env["AWS_SECRET_ACCESS_KEY"] = conn.password
    if extra.get("aws_session_token"):
        env["AWS_SESSION_TOKEN"] = str(extra["aws_session_token"])
    if extra.get("role_arn"):
        env = assumed_role_env(conn_id, env, extra)
    endpoint = extra.get("endpoint_url") or (
        extra.get("service_config", {}).get("s3", {}) or {}
    ).get("endpoint_url")
    if endpoint:
        env["AWS_ENDPOINT_URL_S3"] = str(endpoint)
        env["MLFLOW_S3_ENDPOINT_URL"] = str(endpoint)
    if extra.get("region_name"):
        env["AWS_DEFAULT_REGION"] = str(extra["region_name"])
    return env


def assumed_role_env(conn_id: str, base: dict[str, str], extra: dict[str, Any]) -> dict[str, str]:
    """Temporary credentials of the connection's ``role_arn``, obtained with ``base``'s
    keys (or the worker's own credentials when the connection has none)."""
    kwargs = dict(extra.get("assume_role_kwargs") or {})
    kwargs.setdefault("RoleSessionName", f"rxvision-{conn_id}")
    creds = sts_client(base, extra).assume_role(RoleArn=str(extra["role_arn"]), **kwargs)[
        "Credentials"
    ]
    log.info("connection %r: assumed %s until %s", conn_id, extra["role_arn"], creds["Expiration"])
    return {
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "AWS_SESSION_TOKEN": creds["SessionToken"],
    }


def sts_client(base: dict[str, str], extra: dict[str, Any]) -> Any:
    """An STS client with the connection's own keys (none: the worker's credentials) and
    its ``service_config.sts.endpoint_url`` when set."""
    import boto3

    endpoint = (extra.get("service_config", {}).get("sts", {}) or {}).get("endpoint_url")
    return boto3.session.Session(
        aws_access_key_id=base.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=base.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=base.get("AWS_SESSION_TOKEN"),
        region_name=extra.get("region_name") or "us-east-1",
    ).client("sts", endpoint_url=endpoint)


def mlflow_env(conn_id: str) -> dict[str, str]:
    """``MLFLOW_TRACKING_URI`` from an ``http`` connection whose host is the server URL."""
    conn = _connection(conn_id)
    if conn is None or not conn.host:
        return {}
    uri = conn.host if "://" in conn.host else f"{conn.schema or 'http'}://{conn.host}"
    if conn.port and f":{conn.port}" not in uri:
        uri = f"{uri}:{conn.port}"
    return {"MLFLOW_TRACKING_URI": uri}


def webhook_url(conn_id: str) -> str | None:
    """The alert webhook's URL (the ``host`` of an ``http`` connection), if configured."""
    conn = _connection(conn_id)
    if conn is None or not conn.host:
        return None
    if "://" in conn.host:
        return str(conn.host)
    port = f":{conn.port}" if conn.port else ""
    return f"{conn.schema or 'https'}://{conn.host}{port}"


def task_env(cfg: PipelineConfig, component: str = "worker") -> dict[str, str]:
    """Every variable the library needs, from the connections configured for the
    component (``worker``, ``training``, ``scoring``)."""
    s3 = s3_env(cfg.connections.s3_for(component))
    return {**s3, **mlflow_env(cfg.connections.mlflow)}


def split_secrets(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(public, secret)`` halves of ``env`` (the secret half is never logged)."""
    public = {k: v for k, v in env.items() if k not in SECRET_VARS}
    secret = {k: v for k, v in env.items() if k in SECRET_VARS}
    return public, secret


@contextmanager
def connection_env(cfg: PipelineConfig, component: str = "worker") -> Iterator[dict[str, str]]:
    """Set the component's connection variables in this process for the block, then
    restore."""
    env = task_env(cfg, component)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
