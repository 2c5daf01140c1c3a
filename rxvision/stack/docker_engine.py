"""The Docker engine the nightly's ``train`` task needs, as part of the stack's health.

``rxvision stack up`` starts it where this project may (root, Debian's ``dockerd``, the
local socket) with ``scripts/docker-engine.sh``, or says exactly why it cannot; ``stack
status`` and ``stack check`` report it with the train launcher's mode. A launcher in
``local`` mode needs no engine.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rxvision.home import repo_root

log = logging.getLogger(__name__)

LOCAL_SOCKETS = ("unix:///var/run/docker.sock", "unix://var/run/docker.sock")


@dataclass(frozen=True)
class EngineState:
    """What the train launcher will find: its mode, whether it needs an engine, the engine."""

    mode: str
    needed: bool
    reachable: bool
    detail: str

    @property
    def healthy(self) -> bool:
        """The train task can run: the engine answers, or the launcher needs none."""
        return self.reachable or not self.needed

    def to_json(self) -> dict[str, object]:
        """For ``stack status --json``."""
        return {
            "launcher": self.mode,
            "needed": self.needed,
            "running": self.reachable,
            "healthy": self.healthy,
            "detail": self.detail,
        }


def launcher_mode() -> tuple[str, str | None]:
    """(mode, docker_url) of the train launcher, as the Airflow workers read them."""
    from rxvision.pipeline.config import load_pipeline_config

    launcher = load_pipeline_config().train_launcher
    return launcher.mode, launcher.docker_url


def engine_state(mode: str, docker_url: str | None) -> EngineState:
    """Ask the engine at ``docker_url`` (default: ``DOCKER_HOST`` or the local socket)."""
    from docker.client import DockerClient

    needed = mode != "local"
    try:
        client = DockerClient(base_url=docker_url or _default_url(), timeout=5)
        try:
            version = client.version()
            runtimes = sorted((client.info().get("Runtimes") or {}).keys())
        finally:
            client.close()
    except Exception as exc:
        return EngineState(mode, needed, False, f"not reachable at {_shown(docker_url)}: {exc}")
    detail = f"Docker {version.get('Version', '?')} at {_shown(docker_url)}"
    return EngineState(mode, needed, True, f"{detail}, runtimes: {', '.join(runtimes)}")


def why_not_startable(docker_url: str | None) -> str | None:
    """Why this project may not start the engine here (None: it may)."""
    url = docker_url or _default_url()
    if url not in LOCAL_SOCKETS:
        return f"the launcher's engine is remote ({url}): start it on that host"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed: apt-get install docker.io"
    if os.geteuid() != 0:
        return "dockerd needs root: run `sudo scripts/docker-engine.sh` or start the docker service"
    return None


def start_engine(marker: Path) -> str:
    """Start ``dockerd`` with ``scripts/docker-engine.sh``; ``marker`` records that the stack
    started it (so ``stack down`` stops only an engine it started). Returns what it did."""
    proc = subprocess.run(
        [str(repo_root() / "scripts" / "docker-engine.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return f"could not start dockerd: {' / '.join(tail)}"
    if proc.stdout.strip().splitlines()[-1:] == ["started"]:
        marker.write_text("started by rxvision stack up\n")
        return "started dockerd"
    return "already running"


def ensure_engine_for_launcher(marker: Path) -> str:
    """Start the engine the train launcher needs when it is not running and can be
    started here (recording that in ``marker``); say what was found or done."""
    mode, url = launcher_mode()
    state = engine_state(mode, url)
    if not state.needed:
        return f"not needed (train launcher: {mode})"
    if state.reachable:
        return f"{state.detail} (train launcher: {mode})"
    why = why_not_startable(url)
    if why is not None:
        log.warning("the train task needs a Docker engine (%s): %s", mode, why)
        return f"NOT RUNNING, and not started: {why} (train launcher: {mode})"
    did = start_engine(marker)
    state = engine_state(mode, url)
    return f"{did}: {state.detail} (train launcher: {mode})"


def stop_engine_if_started(marker: Path) -> bool:
    """Stop the engine when ``stack up`` started it; True when stopped."""
    if not marker.is_file():
        return False
    subprocess.run(
        [str(repo_root() / "scripts" / "docker-engine.sh"), "stop"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    marker.unlink(missing_ok=True)
    return True


def _default_url() -> str:
    return os.environ.get("DOCKER_HOST") or LOCAL_SOCKETS[0]


def _shown(docker_url: str | None) -> str:
    return docker_url or _default_url()
