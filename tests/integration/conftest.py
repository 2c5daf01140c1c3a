"""One isolated stack of real servers for the integration tier.

A temp RXVISION_HOME and ports moved away from the defaults (a developer's own stack may
be running); the stack is taken down at the end and must leave no process behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import stack_up

from rxvision.config.schema import StackConfig, StackPorts
from rxvision.home import Home
from rxvision.stack.local_stack import LocalStack

PORT_SHIFT = 1700


def shifted_ports() -> StackPorts:
    defaults = StackPorts().model_dump()
    return StackPorts(**{k: v + PORT_SHIFT for k, v in defaults.items()})


@pytest.fixture(scope="package")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    # A short path: unix sockets (SeaweedFS) must fit in 108 bytes.
    return Home(Path(tmp_path_factory.mktemp("rxh"))).ensure()


@pytest.fixture(scope="package")
def stack(stack_home: Home) -> Iterator[LocalStack]:
    """The stack, up for the integration tier; down (and checked empty) at its end."""
    local = LocalStack(stack_home, StackConfig(ports=shifted_ports()))
    with stack_up(local, {}, timeout_s=240):
        yield local


@pytest.fixture
def stack_env(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The stack's client variables, set in this test's environment."""
    env = stack.client_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def cli_env(stack: LocalStack) -> dict[str, str]:
    """An environment for running the ``rxvision`` CLI against the test stack."""
    return {**os.environ, "RXVISION_HOME": str(stack.home.root)}
