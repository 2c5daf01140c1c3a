"""Start, find and stop the stack's server processes.

Each server runs in its own session (process group) with a PID file under the home's
``run/`` folder and its output in ``logs/``. The PID file keeps the process's start time,
so a stale PID file (a crash, a reused PID) is told apart from a live server. Every
session started is also recorded, and every process carries the home's stack id in its
environment, so ``down`` finds what a server left behind: children still in the session
after their leader died, or ones that started a session of their own. (Processes that
set their title, as Airflow's do, overwrite /proc/PID/environ: the session catches them.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rxvision.errors import StackError

log = logging.getLogger(__name__)

STACK_ID_VAR = "RXVISION_STACK_ID"


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one server."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    stop_grace_s: float = 10.0
    # Postgres takes SIGINT as "fast shutdown"; its SIGTERM waits for clients to leave.
    stop_signal: signal.Signals = signal.SIGTERM


def _read_environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def stack_pids(stack_id: str, sessions: dict[int, int]) -> list[int]:
    """Live processes of a stack: those in one of its ``sessions`` ({sid: leader start
    time}, started no earlier than the leader) or with its id in their environment."""
    marker = f"{STACK_ID_VAR}={stack_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        if _is_zombie(pid):  # exited, only waiting to be reaped: holds nothing
            continue
        sid, started = session_of(pid), start_time(pid)
        in_session = sid in sessions and started is not None and started >= sessions[sid]
        if in_session or marker in _read_environ(pid).split(b"\0"):
            found.append(pid)
    return found


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], session [3])."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is None or fields[0] == "Z"


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None when it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def session_of(pid: int) -> int | None:
    """The process's session id."""
    fields = _stat_fields(pid)
    return int(fields[3]) if fields else None


def is_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


class ManagedProcess:
    """One server of one home: its PID file, log file, start and stop."""

    def __init__(self, spec: ProcessSpec, run_dir: Path, logs_dir: Path, stack_id: str) -> None:
        self.spec = spec
        self.stack_id = stack_id
        self.pid_file = run_dir / f"{spec.name}.pid"
        self.sessions_file = run_dir / "sessions.json"
        self.log_file = logs_dir / f"{spec.name}.log"

    def pid(self) -> int | None:
        """The PID of the running server, or None (a stale PID file is removed)."""
        if not self.pid_file.is_file():
            return None
        try:
            record = json.loads(self.pid_file.read_text())
            pid, started = int(record["pid"]), int(record["start_time"])
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            self.pid_file.unlink(missing_ok=True)
            return None
        if is_alive(pid) and start_time(pid) == started:
            return pid
        log.info("%s: stale PID file (pid %s is gone), removing it", self.spec.name, pid)
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self) -> int:
        """Start the server in a new session; return its PID."""
        env = {**self.spec.env, STACK_ID_VAR: self.stack_id}
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            out.write(f"\n=== {time.strftime('%F %T')} starting {self.spec.name}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                self.spec.argv,
                env=env,
                cwd=self.spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = start_time(proc.pid) or 0
        record = {"pid": proc.pid, "start_time": started, "argv": self.spec.argv}
        self.pid_file.write_text(json.dumps(record))
        record_session(self.sessions_file, proc.pid, started)
        log.info("%s: started pid %d", self.spec.name, proc.pid)
        return proc.pid

    def stop(self) -> bool:
        """Stop the server's process group: SIGTERM, then SIGKILL after the grace period.

        Returns whether a running server was stopped.
        """
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, self.spec.stop_signal)
        if not wait_until(lambda: not is_alive(pid), self.spec.stop_grace_s):
            log.warning(
                "%s: still running after %.0fs, killing", self.spec.name, self.spec.stop_grace_s
            )
            _signal_group(pid, signal.SIGKILL)
            wait_until(lambda: not is_alive(pid), 5)
        reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        if not self.log_file.is_file():
            return "(no log)"
        with self.log_file.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def reap(pid: int) -> None:
    """Collect an exited child of this process, so it leaves no zombie behind."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgid(pid), sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def load_sessions(path: Path) -> dict[int, int]:
    """Sessions started by a home's stack: {session id: leader start time}."""
    if not path.is_file():
        return {}
    return {int(k): int(v) for k, v in json.loads(path.read_text()).items()}


def record_session(path: Path, sid: int, started: int) -> None:
    """Remember a started session, so ``down`` can find its processes after a crash."""
    sessions = load_sessions(path)
    sessions[sid] = started
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sessions))
    tmp.replace(path)


def kill_stragglers(stack_id: str, sessions_file: Path, grace_s: float = 5.0) -> list[int]:
    """Stop every process left of this stack (in its sessions or carrying its id)."""
    pids = stack_pids(stack_id, load_sessions(sessions_file))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not any(is_alive(p) for p in pids), grace_s):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(is_alive(p) for p in pids), 5)
    for pid in pids:
        reap(pid)
    sessions_file.unlink(missing_ok=True)
    return pids


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll ``check`` until it is true or ``timeout_s`` passes; return its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            if check():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def require_started(proc: ManagedProcess, check: Callable[[], bool], timeout_s: float) -> None:
    """Wait for a server's health check; on failure raise ``StackError`` with its log tail."""

    def healthy_or_dead() -> bool:
        return proc.pid() is None or check()

    wait_until(healthy_or_dead, timeout_s, interval_s=0.3)
    ok = False
    with contextlib.suppress(Exception):
        ok = check()
    if not ok:
        state = "exited" if proc.pid() is None else "did not become healthy"
        raise StackError(
            f"{proc.spec.name} {state} within {timeout_s:.0f}s; last lines of "
            f"{proc.log_file}:\n{proc.log_tail()}"
        )
