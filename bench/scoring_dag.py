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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=7200)
    args = parser.parse_args()
    prefix = f"{BUCKET_PREFIX}-{args.images}"
    images = upload_once(cached_photos(args.images), prefix)
    dag = load_pipeline_config().scoring.dag_id
    client = airflow_client()
    client.wait_for_dag(dag, timeout_s=180)
    began = time.monotonic()
    run_id = client.trigger(dag, {"input_uri": prefix + "/", "full": True, "no_cache": True})
    print(f"triggered {dag} run {run_id} on {images} images", flush=True)
    state = client.wait_for_run(dag, run_id, timeout_s=args.timeout)
    wall = time.monotonic() - began
    tis = client.task_instances(dag, run_id)
    by_task = Counter(t["task_id"] for t in tis)
    task_sum = sum(seconds(t) for t in tis)
    shard_s = [seconds(t) for t in tis if t["task_id"] == "score_shard"]
    result = {
        "images": images,
        "state": state,
        "wall_s": round(wall, 1),
        "task_sum_s": round(task_sum, 1),
        "tasks": dict(by_task),
        "states": dict(Counter(t["state"] for t in tis)),
        "shard_s": {
            "min": round(min(shard_s), 1) if shard_s else None,
            "max": round(max(shard_s), 1) if shard_s else None,
        },
        "images_per_s": round(images / wall, 1),
        "run_id": run_id,
        "machine": harness.machine(),
    }
    print(json.dumps(result, indent=2))
    out = harness.RESULTS / "scoring_dag.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
