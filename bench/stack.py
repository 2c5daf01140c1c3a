"""The S3/MLflow/Airflow a benchmark needs: the one the environment points at
(``AWS_ENDPOINT_URL_S3`` set, e.g. after ``eval "$(rxvision stack env)"``), else a
throwaway local stack in a temporary home, taken down afterwards."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rxvision.config.schema import StackConfig, StackPorts
from rxvision.home import Home
from rxvision.stack.local_stack import LocalStack

PORT_SHIFT = 2100


@contextmanager
def bench_stack(need_airflow: bool = False) -> Iterator[LocalStack | None]:
    """Yield the stack started here (None when the environment names one already)."""
    if os.environ.get("AWS_ENDPOINT_URL_S3") and (
        not need_airflow or os.environ.get("RXVISION_HOME")
    ):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="rxb-") as tmp:
        home = Home(Path(tmp)).ensure()
        ports = StackPorts(**{k: v + PORT_SHIFT for k, v in StackPorts().model_dump().items()})
        stack = LocalStack(home, StackConfig(ports=ports))
        saved = dict(os.environ)
        try:
            stack.up(timeout_s=240)
            os.environ.update(stack.client_env())
            yield stack
        finally:
            os.environ.clear()
            os.environ.update(saved)
            stack.down()
