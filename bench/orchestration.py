"""The nightly DAG: wall time of the whole run on the built-in dataset vs the sum of its
tasks' own run times; the difference is what orchestration costs (scheduling, task
start-up, the Docker container's start, XComs).

Runs the main job (``rxvision pipeline run``) once, then ``--repeats`` more nightly runs
with ``force_retrain``, on the stack of ``eval "$(rxvision stack env)"`` (with
``RXVISION_HOME``) or a throwaway one. Needs the training image (scripts/build-images.sh).

    .venv/bin/python bench/orchestration.py [--repeats 2]
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import harness
from stack import bench_stack

from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.config import load_pipeline_config
from rxvision.pipeline.end_to_end import run_pipeline
from rxvision.stack.local_stack import LocalStack
from rxvision.stack.selfcheck import airflow_client


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def timings(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, Any]:
    """The run's wall time and each task's own run time (seconds)."""
    run = client.dag_run(dag_id, run_id)
    tis = client.task_instances(dag_id, run_id)
    tasks = {
        f"{t['task_id']}[{t['map_index']}]" if t.get("map_index", -1) >= 0 else t["task_id"]: (
            _ts(t["end_date"]) - _ts(t["start_date"])
        ).total_seconds()
        for t in tis
        if t.get("start_date") and t.get("end_date")
    }
    wall = (_ts(run["end_date"]) - _ts(run["start_date"])).total_seconds()
    return {"run_id": run_id, "wall_s": wall, "tasks_s": tasks, "sum_tasks_s": sum(tasks.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cfg = load_pipeline_config()
    with bench_stack(need_airflow=True) as started:
        client = airflow_client(started or LocalStack())
        first = run_pipeline(client, cfg, say=print)
        # a run that found the champion already trained on the snapshot did no work
        promoted = first["nightly"]["promoted"]
        runs = [timings(client, cfg.nightly.dag_id, first["nightly"]["run_id"])] if promoted else []
        scoring = timings(client, cfg.scoring.dag_id, first["scoring"]["run_id"])
        for _ in range(args.repeats):
            run_id = client.trigger(cfg.nightly.dag_id, {"force_retrain": True})
            state = client.wait_for_run(cfg.nightly.dag_id, run_id, timeout_s=1800)
            assert state == "success", f"nightly run {run_id} ended {state}"
            runs.append(timings(client, cfg.nightly.dag_id, run_id))
    wall = harness.Case("nightly DAG run, wall", lambda: 0.0)
    work = harness.Case("sum of its tasks' run times", lambda: 0.0)
    wall.samples = [r["wall_s"] for r in runs]
    work.samples = [r["sum_tasks_s"] for r in runs]
    rows = harness.summarize([work, wall], baseline=work.name)
    overhead = rows[1].median - rows[0].median
    harness.report(
        "orchestration",
        rows,
        unit="seconds per run (lower is better)",
        baseline=work.name,
        params=vars(args),
        extra={"runs": runs, "scoring_run": scoring, "orchestration_s": overhead},
    )
    print(f"orchestration: {overhead:.0f} s per nightly run on top of the tasks' own time")


if __name__ == "__main__":
    main()
