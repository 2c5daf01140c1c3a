"""Test tiers and the shared fixtures.

Tiers are pytest markers: ``unit`` (no servers), ``integration`` (an isolated stack of real
servers), ``e2e`` and ``docker``. A tier whose requirements are missing is skipped with the
reason locally; under ``CI=true`` it fails instead, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


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
