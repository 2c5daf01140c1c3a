"""Test tiers and the shared fixtures.

Tiers are pytest markers: ``unit`` (no servers), ``integration`` (an isolated stack of real
servers), ``e2e`` and ``docker``. A tier whose requirements are missing is skipped with the
reason locally; under ``CI=true`` it fails instead, so CI never passes by skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# its import-time environment defaults (no PyPI check, MLflow download settings) must
# predate every test: the guard below restores each test's environment as it found it
import rxvision  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_SESSION_MLFLOW: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """A test that names no tracking store gets a throwaway one for the session.

    MLflow's default is ``sqlite:///mlflow.db`` in the working directory: unit tests that
    plan a scoring run (pinning the fallback alias) created and migrated a database in the
    repository, shared with every other test process.
    """
    if "MLFLOW_TRACKING_URI" not in os.environ:
        folder = tempfile.mkdtemp(prefix="rxv-test-mlflow-")
        _SESSION_MLFLOW.append(folder)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in _SESSION_MLFLOW:
        shutil.rmtree(folder, ignore_errors=True)


def _docker_engine_reason() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    sock = Path(
        os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    )
    if not sock.exists():
        return f"no Docker engine socket at {sock}"
    return None


def tier_unavailable_reason(marker: str) -> str | None:
    """Why a tier cannot run on this machine, or None when it can."""
    if marker in {"integration", "e2e"}:
        venv_bin = REPO / ".venv" / "bin"
        for tool in ("weed", "airflow", "mlflow"):
            if not (venv_bin / tool).exists() and shutil.which(tool) is None:
                return f"{tool} is not installed (run scripts/install.sh)"
    if marker == "docker":
        return _docker_engine_reason()
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons: dict[str, str | None] = {}
    for item in items:
        for marker in ("integration", "e2e", "docker"):
            if item.get_closest_marker(marker) is None:
                continue
            if marker not in reasons:
                reasons[marker] = tier_unavailable_reason(marker)
            reason = reasons[marker]
            if reason is None:
                continue
            if IN_CI:
                item.add_marker(pytest.mark.usefixtures("_fail_unavailable_tier"))
                item.user_properties.append(("unavailable", f"{marker} tier: {reason}"))
            else:
                item.add_marker(pytest.mark.skip(reason=f"{marker} tier cannot run: {reason}"))


@pytest.fixture
def _fail_unavailable_tier(request: pytest.FixtureRequest) -> None:
    reason = dict(request.node.user_properties).get("unavailable", "tier unavailable")
    pytest.fail(f"CI=true and the {reason}")


def _mlflow_uris() -> tuple[object, object] | None:
    """MLflow's process-wide tracking and registry URIs, when MLflow is imported."""
    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    if tracking is None or registry is None:
        return None
    return tracking._tracking_uri, registry._registry_uri  # type: ignore[attr-defined]


def _set_mlflow_uris(uris: tuple[object, object]) -> None:
    sys.modules["mlflow.tracking._tracking_service.utils"]._tracking_uri = uris[0]  # type: ignore[attr-defined]
    sys.modules["mlflow.tracking._model_registry.utils"]._registry_uri = uris[1]  # type: ignore[attr-defined]


@contextlib.contextmanager
def _process_state_restored() -> Iterator[None]:
    """Put ``os.environ`` and MLflow's process-wide URIs back as they were on entry."""
    environ = dict(os.environ)
    uris = _mlflow_uris()
    yield
    if os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)
    if uris is not None:
        _set_mlflow_uris(uris)
    elif _mlflow_uris() is not None:
        _set_mlflow_uris((None, None))


@pytest.fixture(autouse=True, scope="module")
def _restore_module_environment() -> Iterator[None]:
    """The same for a module: its module-scoped fixtures (a training run into the tier's
    stack sets MLflow's tracking URI) set up after this one and are undone before it."""
    with _process_state_restored():
        yield


@pytest.fixture(autouse=True)
def _restore_process_environment() -> Iterator[None]:
    """Give every test the environment and MLflow URIs it started with.

    Code under test sets ``os.environ`` on purpose (the CLI points MLflow at the local
    store, ``mlflow.set_tracking_uri`` exports ``MLFLOW_TRACKING_URI``). Left behind, an
    endpoint outlives the stack of its tier, and a later test's MLflow client retries a dead
    server for minutes: in CI a 3-second unit test took 248 s that way (once left by a
    test, once by a module-scoped fixture: hence the module-level twin above).
    """
    with _process_state_restored():
        yield
