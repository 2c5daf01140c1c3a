"""Helpers of the stack-backed tests: integration, e2e and scale (imported by name: tests
are not a package)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from rxvision.home import repo_root
from rxvision.stack.local_stack import LocalStack
from rxvision.stack.process import load_sessions, session_of, stack_pids
from rxvision.storage.s3 import S3Store

MODEL = "rxvision-pill-classifier"
TRAIN_IMAGE = "rxvision-train:dev"


def kill_session(leader: int) -> None:
    """SIGKILL every process of a session: a server, or a worker with its task processes,
    crashes whole (killing only a server's main pid leaves e.g. uvicorn workers serving)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and session_of(int(entry.name)) == leader:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def schedules_away_from_now(now: datetime | None = None) -> dict[str, str]:
    """The nightly and scoring crons moved 12 hours from ``now`` (UTC).

    A test run that spans 02:00 or 06:00 UTC would otherwise get a real scheduled run in
    the middle of the runs it triggers and checks; the crons' own semantics are tested
    in tests/dags/test_dag_integrity.py."""
    away = (now or datetime.now(UTC)) + timedelta(hours=12)
    cron = f"{away.minute} {away.hour} * * *"
    return {"RXVISION_NIGHTLY_SCHEDULE": cron, "RXVISION_SCORING_SCHEDULE": cron}


@contextmanager
def stack_up(stack: LocalStack, env: dict[str, str], timeout_s: float) -> Iterator[LocalStack]:
    """``stack`` up with ``env`` set (its servers inherit it) and the training image
    built for the block; then down, failing if any process of the stack is left behind.
    The DAGs' crons sit 12 hours away, so only the runs a test triggers (and their Asset
    events) run."""
    sessions_file = stack.home.run_dir / "sessions.json"
    env = {**schedules_away_from_now(), **env}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            stack.up(timeout_s=timeout_s)
            # after `up`: an engine that `up` started is the stack's, and `down` stops it
            ensure_train_image()
            yield stack
    finally:
        sessions = load_sessions(sessions_file)
        stack.down()
        left = stack_pids(stack.stack_id, sessions)
        assert not left, f"stack down left processes behind: {left}"


def ensure_train_image() -> None:
    """Build the training image when the engine lacks it (idempotent, ~1 min cold)."""
    have = subprocess.run(["docker", "image", "inspect", TRAIN_IMAGE], capture_output=True)
    if have.returncode == 0:
        return
    proc = subprocess.run(
        [str(repo_root() / "scripts" / "build-images.sh")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


class WebhookReceiver:
    """A local HTTP endpoint that keeps every JSON body POSTed to it (on-call's webhook)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    received.append(json.loads(body or b"{}"))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, kind: str | None = None, dag_id: str | None = None) -> list[dict[str, Any]]:
        """Received bodies, filtered by class (``sla_miss``) and DAG."""
        out = []
        for body in list(self.received):
            payload = body.get("payload", {})
            if kind and payload.get("class") != kind:
                continue
            if dag_id and payload.get("component") != dag_id:
                continue
            out.append(body)
        return out


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll until ``predicate()`` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def rxvision(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the ``rxvision`` CLI; fail with its output when it fails."""
    proc = subprocess.run(
        [str(repo_root() / ".venv" / "bin" / "rxvision"), *args],
        env=env,
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"rxvision {' '.join(args)}: exit {proc.returncode}\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


def read_parquet(store: S3Store, uri: str) -> list[dict[str, Any]]:
    """The rows of one Parquet object."""
    return list(pq.read_table(io.BytesIO(store.get_bytes(uri))).to_pylist())


def published_rows(store: S3Store, latest_uri: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The latest published scoring run (``latest.json``) and all its rows."""
    import json

    latest = json.loads(store.get_bytes(latest_uri))
    manifest = json.loads(store.get_bytes(f"{latest['uri']}/_manifest.json"))
    rows = [r for s in manifest["shards"] for r in read_parquet(store, s["uri"])]
    return latest, rows
