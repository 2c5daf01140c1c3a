"""The worker pools' forkserver decodes one photo before any worker forks from it, and a
decode pool's server can be started ahead of the pool: a real script, run as a user runs
one, looks at its own process tree and asks its worker what it inherited."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rxvision.data.decoder_warmup import warm_decoder
from rxvision.data.localize import LOCALIZED
from rxvision.forkserver import MAIN_ENV

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]

SCRIPT = """
import os, sys, time
import psutil
from rxvision.data.decode_pool import DecodePool, start_forkserver

class Task:
    key = "photo.jpg"

def inherited(task, limits):
    # runs in the worker: its parent and what the server's warm-up gave before the fork
    from rxvision.data import decoder_warmup
    return os.getppid(), decoder_warmup.WARMED

def lost(task, code, message):
    raise AssertionError(message)

def forkservers():
    return [p.pid for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline())]

def forkservers_once_exec_done():
    # ensure_running returns once the server is forked, not once it has exec'd: until
    # then its command line is still this script's, so look again for a few seconds
    deadline = time.monotonic() + 10
    while not (found := forkservers()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return found

if __name__ == "__main__":
    before = forkservers()
    if sys.argv[1] == "ahead":
        start_forkserver(inherited)
        ahead = forkservers_once_exec_done()
    else:
        ahead = forkservers()
    pool = DecodePool(None, workers=1, file_timeout_s=60, inspect=inherited, lost=lost)
    with pool:
        (parent, warm), = list(pool.imap_unordered([Task()]))
    print(before, ahead, forkservers(), parent, warm)
"""


def run_script(tmp_path: Path, mode: str) -> list[str]:
    script = tmp_path / "warm.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {k: v for k, v in os.environ.items() if k != MAIN_ENV}
    done = subprocess.run(
        [sys.executable, str(script), mode],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warm-up failed" not in done.stderr
    return done.stdout.replace("[", "").replace("]", "").split()


def test_the_warm_up_decodes_through_the_pill_crop() -> None:
    # the first RGB -> Lab conversion builds OpenCV's tables: the crop's localization
    # makes it, so the photo must be found, not fall back to the whole frame
    assert warm_decoder() == LOCALIZED


def test_a_server_started_ahead_is_the_one_workers_fork_from_warm(tmp_path: Path) -> None:
    out = run_script(tmp_path, "ahead")
    # no server before; one after start_forkserver, before any pool; the worker's parent
    assert len(out) == 4, out
    ahead, after, parent, warm = out
    assert ahead == after == parent
    assert warm == LOCALIZED


def test_without_a_start_ahead_the_first_worker_starts_the_server_warm(tmp_path: Path) -> None:
    out = run_script(tmp_path, "late")
    assert len(out) == 3, out
    after, parent, warm = out
    assert after == parent
    assert warm == LOCALIZED
