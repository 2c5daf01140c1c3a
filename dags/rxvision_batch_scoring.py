"""
### RxVision batch scoring

Scores every image under the incoming S3 prefix with the champion model and writes
Parquet predictions to S3 (`key`, `label`, `confidence`, top-k, `model_version`,
`needs_review`). Runs daily and whenever the nightly DAG promotes a new champion.

Tasks, and what to do when one fails:

- `plan_shards`: pins `champion` (and `fallback`) to one version and lists the input
  shards. MLflow or S3 unreachable, or no champion yet: run the nightly DAG.
- `score_shard`: one mapped task per shard; streams images, batches them, writes the
  shard's Parquet atomically. A corrupt image is an error row; a failing model trips
  the circuit breaker to the fallback. A retry skips shards already committed.
- `publish`: checks every shard is committed, writes `_manifest.json` and `_SUCCESS`,
  moves `latest.json`. A shard missing: clear its failed `score_shard` instance.

Predictions of a run are complete only when `_SUCCESS` exists; readers should wait for it.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from airflow.timetables.assets import AssetOrTimeSchedule

from rxvision.pipeline import scoring
from rxvision.pipeline.config import load_pipeline_config
from rxvision_airflow.assets import CHAMPION
from rxvision_airflow.schedules import next_cron_time_only
from rxvision_airflow.sla import default_args, task_deadline_alerts, task_limits
from rxvision_airflow.task_runtime import rxvision_task

CFG = load_pipeline_config()
S = CFG.scoring


@dag(
    dag_id=S.dag_id,
    schedule=AssetOrTimeSchedule(timetable=next_cron_time_only(S.schedule), assets=[CHAMPION]),
    # no start_date, and next_cron_time_only: the first run is the next cron time, not
    # one that passed before the deploy
    catchup=False,
    max_active_runs=1,
    default_args=default_args(CFG),
    deadline=task_deadline_alerts(S),
    tags=["rxvision", "scoring"],
    doc_md=__doc__,
    params={
        "input_uri": Param(
            None, type=["null", "string"], description="Images to score (default: config)"
        ),
    },
)
def rxvision_batch_scoring() -> None:
    @task(**task_limits(CFG, S, "plan_shards"))
    def plan_shards(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        run_id = str(get_current_context()["run_id"])
        input_uri = (params or {}).get("input_uri") or S.input_uri
        with rxvision_task(CFG, "scoring"):
            return scoring.plan(input_uri, scoring.output_uri(S, run_id))

    @task(
        map_index_template="{{ item['shard']['shard_id'] }}", **task_limits(CFG, S, "score_shard")
    )
    def score_shard(item: dict[str, Any]) -> dict[str, Any]:
        with rxvision_task(CFG, "scoring"):
            return scoring.score(item)

    @task(**task_limits(CFG, S, "publish"))
    def publish(planned: list[dict[str, Any]], scored: list[dict[str, Any]]) -> dict[str, Any]:
        run_id = str(get_current_context()["run_id"])
        with rxvision_task(CFG, "scoring"):
            return scoring.publish(planned, S.latest_uri, dag_run_id=run_id)

    planned = plan_shards()
    scored = score_shard.expand(item=planned)
    publish(planned, scored)


rxvision_batch_scoring()
