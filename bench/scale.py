"""Scale: the data stages, then scoring, at growing sizes (1k, 10k, 100k images).

Each stage runs as the CLI a user runs (`rxvision data snapshot / pull / validate /
preprocess`, `rxvision score`), one process at a time, timed from the outside; its peak
memory is the peak of the summed RSS of the stage's processes (it and its workers,
sampled every 0.1 s). Printed per size and stage: seconds, images/s and peak RSS, then the goal
figures: pull + validate + preprocess at the largest size, and the cost per image from
the second-largest size to the largest (flat within 20% is the goal).

The photos (240 px synthetic pills) are generated once per size and kept under
``var/bench-cache/scale/<size>`` (drawing 100,000 takes ~8 minutes on 2 cores). The
stages need S3 and MLflow: the stack the environment names, else a throwaway one. Scoring
uses a small model trained here (its throughput does not depend on its accuracy),
registered and exported as the nightly does (`bench/scoring_job.py`).

    .venv/bin/python bench/scale.py [--sizes 1000 10000 100000] [--no-score]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import harness
from stack import bench_stack

from rxvision.data.synth import generate_dataset
from rxvision.home import repo_root
from rxvision.stack.process import session_of

CACHE = repo_root() / "var" / "bench-cache" / "scale"
RXVISION = str(Path(sys.executable).with_name("rxvision"))
CLASSES = 10
DATA_STAGES = ("pull", "validate", "preprocess")


@dataclass
class Stage:
    """One stage at one size."""

    size: int
    stage: str
    seconds: float
    peak_rss_mb: float

    @property
    def images_per_s(self) -> float:
        return self.size / self.seconds if self.seconds else 0.0


def cached_photos(size: int) -> Path:
    """``size`` synthetic photos in an ImageFolder, drawn once and kept."""
    root = CACHE / str(size)
    done = root / ".complete"
    if not done.exists():
        folder = root / "pills"
        print(f"drawing {size} photos into {folder} (kept for later runs)", flush=True)
        generate_dataset(
            folder,
            classes=CLASSES,
            per_class=size // CLASSES,
            size=240,
            seed=size,
            lookalikes=False,
            progress=drawing_progress,
            overwrite=True,  # a draw interrupted earlier left no marker
        )
        (folder / "manifest.parquet").unlink(missing_ok=True)
        done.write_text(str(size))
    return root / "pills"


def drawing_progress(done: int, total: int) -> None:
    if done == total or done % max(1, total // 10) == 0:
        print(f"  drawn {done}/{total}", flush=True)


class TreeMemory:
    """Samples the RSS of every process of one session (a stage and its workers) every
    0.1 s and keeps the peak of their sum. (``wait4``'s ``ru_maxrss`` cannot be used:
    a child's high-water mark starts at its parent's RSS at fork time.)"""

    def __init__(self, session: int) -> None:
        self.session, self.peak = session, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.1):
            total = 0
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and session_of(int(entry.name)) == self.session:
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        total += int((entry / "statm").read_text().split()[1]) * page
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        """The peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def run_stage(size: int, stage: str, *args: str) -> Stage:
    """Run one CLI command in its own session; its wall time and peak memory."""
    began = time.perf_counter()
    proc = subprocess.Popen([RXVISION, *args], stdout=subprocess.DEVNULL, start_new_session=True)
    memory = TreeMemory(proc.pid)
    code = proc.wait()
    seconds = time.perf_counter() - began
    peak = memory.stop()
    if code != 0:
        raise SystemExit(f"{stage} at {size} images failed ({code}): {args}")
    result = Stage(size, stage, seconds, peak)
    print(
        f"{size:>7} {stage:<10} {seconds:8.1f} s {result.images_per_s:9.0f} img/s "
        f"{result.peak_rss_mb:7.0f} MB",
        flush=True,
    )
    return result


def measure_size(size: int, work: Path, model_uri: str | None) -> list[Stage]:
    """Snapshot, pull, validate, preprocess (and score) ``size`` photos."""
    photos = cached_photos(size)
    tag = f"scale-{size}-{int(time.time())}"
    pulled = work / f"pulled-{size}"
    stages = [
        run_stage(size, "snapshot", "data", "snapshot", str(photos), "--tag", tag),
        run_stage(size, "pull", "data", "pull", "--rev", tag, "--out", str(pulled)),
        run_stage(
            size,
            "validate",
            "data",
            "validate",
            str(pulled),
            "--report",
            str(work / f"report-{size}.json"),
        ),
        run_stage(size, "preprocess", "data", "preprocess", "--rev", tag),
    ]
    if model_uri:
        out = work / f"predictions-{size}"
        stages.append(
            run_stage(
                size,
                "score",
                "score",
                "--input",
                str(pulled),
                "--output",
                str(out),
                "--model",
                model_uri,
                "--no-cache",
            )
        )
    return stages


def summarize(stages: list[Stage]) -> dict[str, object]:
    """The goal figures: the data stages' seconds at the largest size, and the cost per
    image of each stage from the second-largest size to the largest."""
    sizes = sorted({s.size for s in stages})
    by = {(s.size, s.stage): s for s in stages}
    largest = sizes[-1]
    summary: dict[str, object] = {
        "largest": largest,
        "data_stages_s": round(sum(by[(largest, st)].seconds for st in DATA_STAGES), 1),
    }
    if len(sizes) > 1:
        before = sizes[-2]
        summary["cost_per_image_ratio"] = {
            s.stage: round((s.seconds / s.size) / (by[(before, s.stage)].seconds / before), 2)
            for s in stages
            if s.size == largest and (before, s.stage) in by
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--no-score", action="store_true", help="Data stages only.")
    args = parser.parse_args()
    stages: list[Stage] = []
    with bench_stack(), tempfile.TemporaryDirectory(prefix="rxb-scale-") as tmp:
        work = Path(tmp)
        model_uri = None
        if not args.no_score:
            from scoring_job import registered_and_exported, train_small_model

            # registered and exported as the nightly does: scored as a champion would be
            # (its INT8 model when the export keeps it)
            model_uri = registered_and_exported(train_small_model(work / "model"), work / "model")
        print(f"{'images':>7} {'stage':<10} {'time':>10} {'rate':>15} {'peak RSS':>10}")
        for size in sorted(args.sizes):
            stages += measure_size(size, work, model_uri)
    summary = summarize(stages)
    print(json.dumps(summary, indent=2))
    out = harness.RESULTS / "scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "bench": "scale",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": harness.machine(),
        "stages": [{**asdict(s), "images_per_s": round(s.images_per_s, 1)} for s in stages],
        "summary": summary,
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
