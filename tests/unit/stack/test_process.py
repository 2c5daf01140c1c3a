from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rxvision.stack.process import (
    ManagedProcess,
    ProcessSpec,
    is_alive,
    kill_stragglers,
    load_sessions,
    stack_pids,
    wait_until,
)

pytestmark = pytest.mark.unit

# A server that starts a child in its own session and a child in the same session, then
# waits: what 'down' must still find after the leader is gone.
SPAWNER = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
time.sleep(120)
"""


def managed(tmp_path: Path, argv: list[str], stack_id: str = "t1") -> ManagedProcess:
    spec = ProcessSpec("srv", argv, {"PATH": "/usr/bin:/bin"}, tmp_path, stop_grace_s=2)
    return ManagedProcess(spec, tmp_path / "run", tmp_path / "logs", stack_id)


@pytest.fixture
def dirs(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir()
    (tmp_path / "logs").mkdir()
    return tmp_path


def test_start_records_pid_and_stop_ends_it(dirs: Path) -> None:
    proc = managed(dirs, [sys.executable, "-c", "import time; time.sleep(60)"])
    pid = proc.start()
    assert proc.pid() == pid and is_alive(pid)
    assert proc.stop() is True
    assert not is_alive(pid)
    assert proc.pid() is None and not proc.pid_file.exists()


def test_stale_pid_file_of_dead_process_is_removed(dirs: Path) -> None:
    proc = managed(dirs, ["true"])
    proc.pid_file.write_text(json.dumps({"pid": 999_999_9, "start_time": 1, "argv": []}))
    assert proc.pid() is None
    assert not proc.pid_file.exists()


def test_pid_file_naming_a_reused_pid_is_stale(dirs: Path) -> None:
    # Our own PID is alive, but started at another time than the file says.
    import os

    proc = managed(dirs, ["true"])
    proc.pid_file.write_text(json.dumps({"pid": os.getpid(), "start_time": 1, "argv": []}))
    assert proc.pid() is None


def test_garbage_pid_file_is_removed(dirs: Path) -> None:
    proc = managed(dirs, ["true"])
    proc.pid_file.write_text("not json")
    assert proc.pid() is None and not proc.pid_file.exists()


def test_stragglers_in_session_and_own_session_are_stopped(dirs: Path) -> None:
    proc = managed(dirs, [sys.executable, "-c", SPAWNER], stack_id="strag")
    leader = proc.start()
    sessions = load_sessions(proc.sessions_file)
    assert wait_until(lambda: len(stack_pids("strag", sessions)) == 3, 20)
    children = [p for p in stack_pids("strag", sessions) if p != leader]
    proc.stop()
    kill_stragglers("strag", proc.sessions_file)
    assert wait_until(lambda: not any(is_alive(p) for p in children), 10)
    assert stack_pids("strag", sessions) == []


def test_log_tail_shows_last_lines(dirs: Path) -> None:
    proc = managed(dirs, [sys.executable, "-c", "print('\\n'.join(map(str, range(100))))"])
    pid = proc.start()
    wait_until(lambda: not is_alive(pid), 10)
    assert proc.log_tail(3).splitlines() == ["97", "98", "99"]
