"""A statsd receiver for the local stack: listens on UDP and keeps what it receives.

Counters are summed, gauges keep their last value, timers keep count/sum/min/max and a
bounded sample for percentiles. The state is written to a JSON file (atomically, at most
once a second) that ``rxvision stack metrics`` reads; a restart continues from that file.

Run as ``python -m rxvision.stack.statsd_receiver --port P --state FILE``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TIMER_SAMPLE = 1000


@dataclass
class Timer:
    """Summary of one timer's observations (milliseconds)."""

    count: int = 0
    total: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")
    samples: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        self.samples.append(value)
        if len(self.samples) > TIMER_SAMPLE:
            del self.samples[: len(self.samples) - TIMER_SAMPLE]

    def to_json(self) -> dict[str, Any]:
        ordered = sorted(self.samples)

        def pct(q: float) -> float | None:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None

        return {
            "count": self.count,
            "sum": self.total,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "mean": self.total / self.count if self.count else None,
            "p50": pct(0.50),
            "p95": pct(0.95),
            "p99": pct(0.99),
            "samples": self.samples,
        }


@dataclass
class MetricStore:
    """Everything received so far."""

    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    timers: dict[str, Timer] = field(default_factory=dict)
    packets: int = 0
    bad_lines: int = 0

    def ingest(self, payload: bytes) -> None:
        """Apply one UDP datagram (one or more newline-separated statsd lines)."""
        self.packets += 1
        for line in payload.decode(errors="replace").splitlines():
            if line.strip() and not self.apply_line(line.strip()):
                self.bad_lines += 1

    def apply_line(self, line: str) -> bool:
        """Apply ``name:value|type[|@rate][|#tags]``; False when malformed."""
        try:
            name, rest = line.split(":", 1)
            parts = rest.split("|")
            value_text, kind = parts[0], parts[1]
            rate = next((float(p[1:]) for p in parts[2:] if p.startswith("@")), 1.0)
        except (ValueError, IndexError):
            return False
        try:
            if kind == "c":
                self.counters[name] = self.counters.get(name, 0.0) + float(value_text) / rate
            elif kind == "g":
                delta = value_text.startswith(("+", "-"))
                base = self.gauges.get(name, 0.0) if delta else 0.0
                self.gauges[name] = base + float(value_text)
            elif kind in ("ms", "h", "d"):
                self.timers.setdefault(name, Timer()).add(float(value_text))
            elif kind == "s":
                self.gauges[name] = self.gauges.get(name, 0.0) + 1
            else:
                return False
        except ValueError:
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "updated": time.time(),
            "packets": self.packets,
            "bad_lines": self.bad_lines,
            "counters": self.counters,
            "gauges": self.gauges,
            "timers": {k: t.to_json() for k, t in self.timers.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MetricStore:
        store = cls(
            counters=dict(data.get("counters", {})),
            gauges=dict(data.get("gauges", {})),
            packets=int(data.get("packets", 0)),
            bad_lines=int(data.get("bad_lines", 0)),
        )
        for name, t in data.get("timers", {}).items():
            store.timers[name] = Timer(
                count=t["count"],
                total=t["sum"],
                min=t["min"] if t["min"] is not None else float("inf"),
                max=t["max"] if t["max"] is not None else float("-inf"),
                samples=list(t.get("samples", [])),
            )
        return store


def load_metrics(state: Path) -> dict[str, Any]:
    """The receiver's saved state (empty sections when nothing was received yet)."""
    if not state.is_file():
        return MetricStore().to_json()
    return dict(json.loads(state.read_text()))


def save_state(store: MetricStore, state: Path) -> None:
    """Write the state atomically, so a reader never sees half a file."""
    tmp = state.with_name(state.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(store.to_json()))
    tmp.replace(state)


def serve(port: int, state: Path, host: str = "127.0.0.1", flush_s: float = 0.5) -> None:
    """Receive statsd datagrams forever, saving the state at most every ``flush_s``."""
    store = MetricStore.from_json(load_metrics(state)) if state.is_file() else MetricStore()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    save_state(store, state)  # marks readiness: the file exists once we listen
    log.info("statsd receiver on %s:%d, state in %s", host, port, state)
    dirty, last_flush = False, time.monotonic()
    while True:
        ready, _, _ = select.select([sock], [], [], flush_s)
        if ready:
            payload, _ = sock.recvfrom(65535)
            store.ingest(payload)
            dirty = True
        if dirty and time.monotonic() - last_flush >= flush_s:
            save_state(store, state)
            dirty, last_flush = False, time.monotonic()


def main() -> None:
    """Entry point of ``python -m rxvision.stack.statsd_receiver``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    serve(args.port, args.state, args.host)


if __name__ == "__main__":
    main()
