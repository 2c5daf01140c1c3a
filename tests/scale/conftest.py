"""The scale-out topology of the Deployment issue, for real: `stack up --profile scale`
(CeleryExecutor, Redis broker, Postgres for Airflow and MLflow, a `default` and a `gpu`
Celery worker), its own ports and home, the training image on the Docker engine."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import rxvision, stack_up

from rxvision.config.schema import ScaleStack, StackConfig, StackPorts
from rxvision.home import Home
from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.stack import scale
from rxvision.stack.local_stack import LocalStack
from rxvision.stack.selfcheck import airflow_client

PORT_SHIFT = 2100
# 61 images in shards of 8: the scoring DAG maps score_shard over 8 shards. A 3-epoch
# model (EPOCHS) behind gates that pass it (registry-topology.yaml): this tier proves the
# topology, the e2e tier the shipped recipe and gates; ~5 minutes less training.
ENV = {
    "RXVISION_SCORING_SHARD_SIZE": "8",
    "RXVISION_TRAIN_LAUNCHER": "docker-dev",
    "RXVISION_REGISTRY_CONFIG": str(Path(__file__).with_name("registry-topology.yaml")),
}
EPOCHS = 3
# A dead worker's task fails (and is retried) after 30 s without a heartbeat, not 300 s.
SCALE = ScaleStack(task_heartbeat_timeout_s=30, task_queued_timeout_s=120)


@pytest.fixture(scope="package")
def scale_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The scale profile's stack, brought up once for the package and down after."""
    home = Home(Path(tmp_path_factory.mktemp("rxs"))).ensure()
    ports = StackPorts(**{k: v + PORT_SHIFT for k, v in StackPorts().model_dump().items()})
    stack = LocalStack(home, StackConfig(ports=ports, scale=SCALE), profile="scale")
    pg_data = scale.postgres_data_dir(stack.layout())
    try:
        with stack_up(stack, ENV, timeout_s=300):
            yield stack
    finally:
        shutil.rmtree(pg_data, ignore_errors=True)


@pytest.fixture(scope="package")
def scale_env(scale_stack: LocalStack) -> dict[str, str]:
    """An environment for the ``rxvision`` CLI against the scale stack."""
    return {**os.environ, **ENV, **scale_stack.client_env()}


@pytest.fixture(scope="package")
def scale_client(scale_stack: LocalStack) -> AirflowClient:
    return airflow_client(scale_stack)


@pytest.fixture(scope="package")
def scale_main_job(
    scale_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The README's main job on the scale stack: nightly DAG, then the scoring DAG."""
    out = tmp_path_factory.mktemp("scale-main") / "summary.json"
    rxvision(
        scale_env,
        *("pipeline", "run", "--epochs", str(EPOCHS), "--timeout", "1500"),
        *("--summary", str(out)),
        timeout=1800,
    )
    return dict(json.loads(out.read_text()))
