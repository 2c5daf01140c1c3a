"""Where snapshots live, and the commands that reach them.

The data registry is a git repository (a bare one under RXVISION_HOME by default) whose
tags name the snapshots; the DVC remote on S3 holds their shards. Both are driven through
their documented command lines: DVC in a child process keeps its logging and working
directory changes out of ours.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rxvision.data.snapshot_shards import DEFAULT_SHARD_SIZE
from rxvision.errors import SnapshotError


@dataclass(frozen=True)
class SnapshotSettings:
    """Where snapshots live: the git registry, the DVC remote and the local cache."""

    registry_url: str
    remote_url: str
    cache_dir: Path
    endpoint_url: str | None = None
    jobs: int = 8
    shard_size: int = DEFAULT_SHARD_SIZE
    # after each fetch the local DVC cache keeps only the fetched snapshot's objects:
    # every snapshot of a growing catalogue repacks most shards, so a cache that keeps
    # them all grows by about the catalogue's size every night
    keep_only_latest: bool = False


def git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    """Run git with no terminal prompt; its stdout, or ``SnapshotError`` with its stderr."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise SnapshotError(f"git {' '.join(args)} failed: {proc.stderr.strip()[-800:]}")
    return proc.stdout.strip()


def ensure_registry(registry_url: str) -> None:
    """Create the default local registry (a bare git repo) when it does not exist yet."""
    if "://" in registry_url or registry_url.startswith("git@"):
        return
    path = Path(registry_url)
    if not (path / "HEAD").is_file():
        path.mkdir(parents=True, exist_ok=True)
        git("init", "--bare", "--initial-branch=main", str(path))


def dvc_env(settings: SnapshotSettings) -> dict[str, str]:
    """DVC's environment: no analytics, its site cache under ours."""
    site = settings.cache_dir / "dvc-site"
    site.mkdir(parents=True, exist_ok=True)
    return {"DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(site)}


def configure_dvc_local(work: Path, settings: SnapshotSettings) -> None:
    """Point a working copy at this machine's cache and S3 endpoint (``config.local``:
    per machine, never committed)."""
    endpoint = settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
    cache = settings.cache_dir / "dvc-cache"
    cache.mkdir(parents=True, exist_ok=True)
    lines = ["[cache]", f"    dir = {cache}", "    type = hardlink,copy"]
    if endpoint:
        lines += ["['remote \"storage\"']", f"    endpointurl = {endpoint}"]
    (work / ".dvc" / "config.local").write_text("\n".join(lines) + "\n")


def dvc(work: Path, settings: SnapshotSettings, *args: str) -> None:
    """Run a DVC command in ``work``; ``SnapshotError`` with its output when it fails."""
    env = {**os.environ, **dvc_env(settings)}
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise SnapshotError(f"dvc {' '.join(args)} failed (exit {proc.returncode}): {detail}")


@contextmanager
def cache_lock(settings: SnapshotSettings, *, exclusive: bool) -> Iterator[None]:
    """Hold the local DVC cache: shared while objects are added or checked out (by any
    process of this machine), exclusive while garbage is collected. A checkout's files
    are hard links, so they outlive a collection that removes their cache entries."""
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.cache_dir / "dvc-cache.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
