"""
### RxVision batch scoring

Scores the images under the incoming S3 prefix with the champion model and writes
Parquet predictions to S3 (`key`, `label`, `confidence`, top-k, `model_version`,
`needs_review`). Runs daily and whenever the nightly DAG promotes a new champion.

**Incremental**: a run scores only the images that are new or changed (another ETag or
size under the same key) since the last run that published, by the prefix's
processed-keys manifest under `scoring.processed_uri`; `publish` advances it, so a
failed run's images are planned again by the next run (the inference cache serves the
shards it did commit). A new champion scores every image (`rescore_on_new_champion`).
Trigger with the param `full: true` to rescan everything (one run's predictions then
cover the whole prefix; unchanged images come from the inference cache);
`scoring.processed_uri: null` turns incremental scoring off; `no_cache: true` scores
every planned image afresh; `shard_size: N` cuts this run's shards at N keys instead of
the config's `shard_size` (2,500: each task's start, ~3.4 s of CPU, is then ~10% of it;
lower it when many worker slots would otherwise sit idle).

Tasks, and what to do when one fails:

- `plan_shards`: pins `champion` and `fallback` to one version each and lists the input
  shards, both saved in the run's `_plan.json`: a rerun of the run (a cleared task) reuses
  them, so a promotion between tries never mixes versions across shards. MLflow or S3
  unreachable, or no champion yet: run the nightly DAG. **No image** under the incoming
  prefix (a night with no new photos) is normal here: with `scoring.allow_empty: true`
  (the default) nothing is scored, `publish` writes an empty `_manifest.json` and
  `_SUCCESS`, and `latest.json` keeps pointing at the last predictions; set it to false
  to make `plan_shards` fail instead. The same holds for a night with **nothing new**.
  Its output (XCom) is one small item per shard (its id and size, never its keys), and
  the shard count is bounded by `max_shards` in `configs/serving.yaml` (512: under
  Airflow's `max_map_length` of 1,024): a larger input gets larger shards.
- `score_shard`: one mapped task per shard; reads its keys from `_plan.json`, streams
  images, batches them, writes the
  shard's Parquet atomically. A corrupt image is an error row; a failing model trips
  the circuit breaker to the fallback. A champion that **cannot be loaded** (a download
  timeout) fails the try, so that Airflow retries it; only the last try scores with the
  fallback, and then each row says why in `fallback_reason` (and the log says so). A
  retry skips shards already committed.
- `publish`: checks every shard is committed, writes the pharmacist's **review gallery**
  (`review/index.html`: every `needs_review` image with its crop, top-3 candidates and
  their reference photos; the task's "Review gallery" link opens it; a gallery that
  cannot be written is logged and the run goes on), `_manifest.json` and `_SUCCESS`,
  moves `latest.json` **forward only**: it is refused (a warning in the log, and
  `latest_moved: false` in the task's return value; the task succeeds) when the pointer
  names a run planned later than this one, e.g. when an old run is cleared and
  republishes. Then it records the planned images in the processed-keys manifest (a
  conditional write; the task's return value says how many under `processed`). A shard
  missing: clear its failed `score_shard` instance.

Predictions of a run are complete only when `_SUCCESS` exists; readers should wait for it.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, TriggerRule, dag, get_current_context, task
from airflow.timetables.assets import AssetOrTimeSchedule

from rxvision.pipeline import scoring
from rxvision.pipeline.config import load_pipeline_config
from rxvision_airflow.assets import CHAMPION
from rxvision_airflow.schedules import next_cron_time_only
from rxvision_airflow.scoring import PublishScoringOperator
from rxvision_airflow.sla import default_args, task_deadline_alerts, task_limits
from rxvision_airflow.task_runtime import rxvision_task, worker_task_slots

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
    user_defined_macros={"rxv_scoring_output": lambda run: scoring.output_uri(S, run)},
    params={
        "input_uri": Param(
            None, type=["null", "string"], description="Images to score (default: config)"
        ),
        "full": Param(
            False,
            type="boolean",
            description="Score every image under the input, not only what is new since "
            "the last published run",
        ),
        "no_cache": Param(
            False,
            type="boolean",
            description="Score every planned image afresh, not from the inference cache "
            "(fresh rows still refresh it)",
        ),
        "shard_size": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Keys per shard (one mapped task each) for this run (default: "
            "config; the count stays at most max_shards)",
        ),
    },
)
def rxvision_batch_scoring() -> None:
    @task(**task_limits(CFG, S, "plan_shards"))
    def plan_shards(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        run_id = str(get_current_context()["run_id"])
        input_uri = (params or {}).get("input_uri") or S.input_uri
        with rxvision_task(CFG, "scoring"):
            return scoring.plan(
                input_uri,
                scoring.output_uri(S, run_id),
                allow_empty=S.allow_empty,
                processed_uri=S.processed_uri,
                full=bool((params or {}).get("full")),
                rescore_on_new_champion=S.rescore_on_new_champion,
                shard_size=(params or {}).get("shard_size"),
            )

    @task(
        map_index_template="{{ item['shard']['shard_id'] }}", **task_limits(CFG, S, "score_shard")
    )
    def score_shard(item: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        ti = get_current_context()["ti"]
        last_try = scoring.is_last_try(ti.try_number, ti.max_tries)
        use_cache = not (params or {}).get("no_cache")
        with rxvision_task(CFG, "scoring"):
            return scoring.score(
                item, last_try=last_try, use_cache=use_cache, task_slots=worker_task_slots()
            )

    planned = plan_shards()
    # none_failed: an empty plan maps no score_shard (skipped), and the run still
    # finalises; a failed shard still stops it. Its page links the run's review gallery;
    # it also reports the breaker's switches as an incident (auto-recovery resolves it).
    publish = PublishScoringOperator(
        task_id="publish",
        planned=planned,
        latest_uri=S.latest_uri,
        output_uri="{{ rxv_scoring_output(run_id) }}",
        allow_empty=S.allow_empty,
        trigger_rule=TriggerRule.NONE_FAILED,
        **task_limits(CFG, S, "publish"),
    )
    # an ordering edge only: publish reads nothing the shards return (an empty plan maps
    # no shard, and there is no XCom to resolve)
    score_shard.expand(item=planned) >> publish


rxvision_batch_scoring()
