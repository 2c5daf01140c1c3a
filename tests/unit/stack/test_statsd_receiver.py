from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rxvision.stack.ports import next_free_port
from rxvision.stack.process import wait_until
from rxvision.stack.statsd_receiver import MetricStore, load_metrics

pytestmark = pytest.mark.unit


def test_counters_sum_with_sample_rate() -> None:
    store = MetricStore()
    store.ingest(b"a.b:1|c\na.b:2|c|@0.5\n")
    assert store.counters["a.b"] == 5


def test_gauges_set_and_delta() -> None:
    store = MetricStore()
    store.ingest(b"g:10|g\ng:+5|g\ng:-3|g")
    assert store.gauges["g"] == 12


def test_timers_keep_percentiles() -> None:
    store = MetricStore()
    for v in range(1, 101):
        store.apply_line(f"t:{v}|ms")
    t = store.timers["t"].to_json()
    assert (t["count"], t["min"], t["max"]) == (100, 1, 100)
    assert t["p50"] == 51 and t["p99"] == 100


def test_malformed_lines_are_counted_not_fatal() -> None:
    store = MetricStore()
    store.ingest(b"nocolon\nx:abc|c\ny:1|zz\nok:1|c")
    assert store.bad_lines == 3
    assert store.counters == {"ok": 1}


def test_state_round_trips_through_json() -> None:
    store = MetricStore()
    store.ingest(b"c:2|c\nt:5|ms")
    again = MetricStore.from_json(store.to_json())
    assert again.counters == {"c": 2} and again.timers["t"].count == 1


def start_receiver(state: Path, attempts: int = 3) -> tuple[subprocess.Popen[bytes], int]:
    """The receiver on a free UDP port. A port found free can be taken before the receiver
    binds it (its bind then fails and it exits): the next free port is tried."""
    port = 31900
    for _ in range(attempts):
        port = next_free_port(port, set(), udp=True)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rxvision.stack.statsd_receiver",
                f"--port={port}",
                f"--state={state}",
            ]
        )
        wait_until(lambda p=proc: state.is_file() or p.poll() is not None, 20)
        if state.is_file():
            return proc, port
        proc.kill()
        proc.wait(10)
        port += 1
    raise AssertionError(f"the statsd receiver did not start in {attempts} attempts")


def test_receiver_process_keeps_udp_metrics(tmp_path: Path) -> None:
    state = tmp_path / "metrics.json"
    proc, port = start_receiver(state)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"rx.hits:4|c\nrx.lat:7|ms", ("127.0.0.1", port))
        assert wait_until(lambda: load_metrics(state)["counters"].get("rx.hits") == 4, 10)
        assert load_metrics(state)["timers"]["rx.lat"]["count"] == 1
    finally:
        proc.terminate()
        proc.wait(10)
