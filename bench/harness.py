"""What every benchmark here shares: cases run alternately in one process, several
repetitions, median and spread, the ratio to the baseline, a JSON file and a table.

Benchmarks assert nothing about time: they measure and report.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
if str(REPO) not in sys.path:
    # last, not first: PYTHONPATH (a worktree of another commit, for a before/after run of
    # the same script) and the installed package are found before this checkout
    sys.path.append(str(REPO))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def machine() -> dict[str, Any]:
    """The machine a result was measured on."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": model,
        "cores": cores,
        "python": platform.python_version(),
        "host": platform.node(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


@dataclass
class Case:
    """One way of doing the work: ``run()`` does it once and returns the units of work
    done (images, rows), which the harness times; or ``(units, seconds)`` when the case
    times its own steady state (e.g. leaving out a trainer's start-up)."""

    name: str
    run: Callable[[], float | tuple[float, float]]
    setup: Callable[[], None] | None = None
    samples: list[float] = field(default_factory=list)  # units per second


def measure(cases: list[Case], repeats: int = 5, warmup: int = 1) -> None:
    """Run the cases alternately (A B A B ...) so that drift on a shared machine hits
    each alike; keep units/s of every timed repetition."""
    for case in cases:
        if case.setup:
            case.setup()
        for _ in range(warmup):
            case.run()
    for _ in range(repeats):
        for case in cases:
            began = time.perf_counter()
            done = case.run()
            units, seconds = (
                done if isinstance(done, tuple) else (done, time.perf_counter() - began)
            )
            case.samples.append(units / seconds)


@dataclass
class Row:
    """One case's summary."""

    name: str
    median: float
    low: float
    high: float
    spread_pct: float
    ratio: float | None
    samples: list[float]


def summarize(cases: list[Case], baseline: str) -> list[Row]:
    """Median, min/max and spread (max-min over median) of each case, and its ratio to
    the baseline's median (>1: faster than the baseline)."""
    medians = {c.name: statistics.median(c.samples) for c in cases}
    base = medians.get(baseline)
    rows = []
    for case in cases:
        med = medians[case.name]
        rows.append(
            Row(
                name=case.name,
                median=med,
                low=min(case.samples),
                high=max(case.samples),
                spread_pct=100 * (max(case.samples) - min(case.samples)) / med if med else 0.0,
                ratio=med / base if base else None,
                samples=[round(s, 3) for s in case.samples],
            )
        )
    return rows


def report(
    bench: str,
    rows: list[Row],
    *,
    unit: str,
    baseline: str,
    params: dict[str, Any],
    out: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``bench/results/<bench>.json`` (or ``out``) and print a table."""
    payload = {
        "bench": bench,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "unit": unit,
        "baseline": baseline,
        "params": params,
        "results": [asdict(r) for r in rows],
        **(extra or {}),
    }
    path = out or RESULTS / f"{bench}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print_table(bench, rows, unit, baseline)
    print(f"written: {path}")
    return payload


def print_table(bench: str, rows: list[Row], unit: str, baseline: str) -> None:
    """A plain table: case, median, range, spread, ratio to the baseline."""
    print(f"\n{bench} ({unit}; ratio = median / median of {baseline!r})")
    print(f"{'case':<34} {'median':>10} {'min':>10} {'max':>10} {'spread':>8} {'ratio':>7}")
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        print(
            f"{r.name:<34} {r.median:>10.1f} {r.low:>10.1f} {r.high:>10.1f} "
            f"{r.spread_pct:>7.0f}% {ratio:>7}"
        )
