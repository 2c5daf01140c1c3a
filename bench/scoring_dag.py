"""The scoring DAG at scale, through the scheduler: ``--images`` photos under an S3
prefix, one run of ``rxvision_batch_scoring`` on them, waited for through the REST API.

``plan_shards`` writes the plan to ``_plan.json`` and returns shard ids only; the mapped
``score_shard`` count is bounded by ``max_shards`` (``configs/serving.yaml``), so a larger
input gets larger shards, never more tasks than Airflow's ``max_map_length``.

Needs the local stack with a champion (``rxvision stack up``, ``eval "$(rxvision stack
env)"`` and the main job, ``rxvision pipeline run``). The photos are the scale
benchmark's cached synthetic set (``var/bench-cache/scale/<images>``, drawn once); they
are uploaded once per stack (a marker object records it). Prints the run's wall time,
the sum of its tasks' run times, the mapped shard count and images/s; writes
``bench/results/scoring_dag.json``. A benchmark of one run, not a timed test.

    .venv/bin/python bench/scoring_dag.py [--images 100000]
    .venv/bin/python bench/scoring_dag.py --images 10000 --shard-sizes 500 2500 [--repeats 2]

With ``--shard-sizes``, runs at each size (the DAG's ``shard_size`` param) alternate in one
process, the first size the baseline: prints images/s end to end and the ratio, writes
``bench/results/scoring_dag_shard_sizes.json`` with every run's wall time and task sum.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import harness
from scale import cached_photos

from rxvision.cli.pipeline import airflow_client
from rxvision.pipeline.config import load_pipeline_config
from rxvision.storage.s3 import S3Store

BUCKET_PREFIX = "s3://rxvision-data/bench/scoring-dag"


def upload_once(photos: Path, prefix: str, threads: int = 16) -> int:
    """Every photo under ``prefix`` (skipped when its marker says it is there already)."""
    store = S3Store()
    marker = f"{prefix}/_uploaded.json"
    files = sorted(photos.rglob("*.jpg"))
    try:
        if json.loads(store.get_bytes(marker))["images"] == len(files):
            print(f"{len(files)} photos already under {prefix}", flush=True)
            return len(files)
    except Exception:  # no marker yet: upload
        pass
    began, done = time.monotonic(), 0

    def put(path: Path) -> None:
        store.upload_file(path, f"{prefix}/{path.relative_to(photos).as_posix()}")

    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(put, files):
            done += 1
            if done % max(1, len(files) // 10) == 0:
                print(f"  uploaded {done}/{len(files)} ({time.monotonic() - began:.0f} s)")
    store.put_bytes(marker, json.dumps({"images": len(files)}).encode())
    return len(files)


def seconds(ti: dict[str, Any]) -> float:
    """A task instance's run time (0 when it never ran)."""
    if not ti.get("start_date") or not ti.get("end_date"):
        return 0.0
    start = datetime.fromisoformat(ti["start_date"])
    return (datetime.fromisoformat(ti["end_date"]) - start).total_seconds()


def one_run(
    client: Any, dag: str, prefix: str, images: int, timeout: float, **params: Any
) -> dict[str, Any]:
    """One run of the scoring DAG on every photo under ``prefix``, waited for: its wall
    time, the sum of its tasks' run times, its mapped shard count."""
    began = time.monotonic()
    conf = {"input_uri": prefix + "/", "full": True, "no_cache": True, **params}
    run_id = client.trigger(dag, conf)
    print(f"triggered {dag} run {run_id} on {images} images ({params or 'defaults'})", flush=True)
    state = client.wait_for_run(dag, run_id, timeout_s=timeout)
    wall = time.monotonic() - began
    tis = client.task_instances(dag, run_id)
    shard_s = [seconds(t) for t in tis if t["task_id"] == "score_shard"]
    return {
        "images": images,
        "params": params,
        "state": state,
        "wall_s": round(wall, 1),
        "task_sum_s": round(sum(seconds(t) for t in tis), 1),
        "tasks": dict(Counter(t["task_id"] for t in tis)),
        "states": dict(Counter(t["state"] for t in tis)),
        "shard_s": {
            "min": round(min(shard_s), 1) if shard_s else None,
            "max": round(max(shard_s), 1) if shard_s else None,
        },
        "images_per_s": round(images / wall, 1),
        "run_id": run_id,
    }


def compare_shard_sizes(
    client: Any, dag: str, prefix: str, images: int, args: argparse.Namespace
) -> None:
    """Runs at each ``--shard-sizes`` (the DAG's ``shard_size`` param), alternated, the
    first size the baseline."""
    runs: list[dict[str, Any]] = []

    def case(size: int) -> harness.Case:
        def run() -> tuple[float, float]:
            runs.append(one_run(client, dag, prefix, images, args.timeout, shard_size=size))
            assert runs[-1]["state"] == "success", runs[-1]
            return float(images), float(runs[-1]["wall_s"])

        return harness.Case(f"{size} keys per shard", run)

    cases = [case(size) for size in args.shard_sizes]
    harness.measure(cases, repeats=args.repeats, warmup=0)
    rows = harness.summarize(cases, cases[0].name)
    harness.report(
        "scoring_dag_shard_sizes",
        rows,
        unit="images/s end to end",
        baseline=cases[0].name,
        params={"images": images, "repeats": args.repeats, "shard_sizes": args.shard_sizes},
        extra={"runs": runs},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument(
        "--shard-sizes",
        type=int,
        nargs="*",
        default=[],
        help="compare runs at these shard sizes (alternated; the first is the baseline)",
    )
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    prefix = f"{BUCKET_PREFIX}-{args.images}"
    images = upload_once(cached_photos(args.images), prefix)
    dag = load_pipeline_config().scoring.dag_id
    client = airflow_client()
    client.wait_for_dag(dag, timeout_s=180)
    if args.shard_sizes:
        compare_shard_sizes(client, dag, prefix, images, args)
        return
    result = {**one_run(client, dag, prefix, images, args.timeout), "machine": harness.machine()}
    print(json.dumps(result, indent=2))
    out = harness.RESULTS / "scoring_dag.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
