"""
### RxVision nightly retraining

Retrains the pill classifier on the newest dataset snapshot and, when the new model
passes the production gates, makes it the champion; the scoring DAG then runs on it.

Tasks, and what to do when one fails:

- `resolve_snapshot`: picks the snapshot (param `snapshot_rev`, else the newest tag);
  skips the run when the champion already trained on it (unless `force_retrain`).
  Fails when the data registry is unreachable or the tag does not exist:
  `rxvision data list`.
- `pull_snapshot`: fetches its shards from S3 (DVC) and verifies every image's hash;
  the later tasks read the images in place, nothing is unpacked. S3 down: the retry
  usually fixes it; objects missing: push the snapshot again.
- `validate`: resolution, RGB, corruption, class balance; the JSON report goes to S3
  ("Validation report" link on the task). Read the report: each failed criterion
  names the files.
- `preprocess`: builds the feature store shards (a cache hit does nothing). S3 or disk
  errors: clear and rerun, it is safe.
- `train`: `rxvision train` in the GPU container (DockerOperator). A retry resumes from
  the run's last checkpoint in S3; read the container log in the task log.
- `evaluate`: validation metrics and the gates' verdict. A missing training summary
  means `train` did not finish: look there.
- `register`: registers the model behind the gates, exports TorchScript and ONNX with
  parity checks, promotes it to champion. A refusal is not a crash: the task is
  skipped with a `not_promoted` alert and the old champion stays.
- `refresh_scoring`: emits the champion Asset event that starts the scoring DAG.

Every task has an SLA budget (`configs/pipeline.yaml`); a late task alerts on-call
through the deadline callbacks, a failed one through its failure callback.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from rxvision.pipeline import pools, run_ids
from rxvision.pipeline.config import load_pipeline_config
from rxvision_airflow.alerting import send
from rxvision_airflow.assets import CHAMPION
from rxvision_airflow.operators import RxVisionTrainOperator
from rxvision_airflow.schedules import next_cron_time_only
from rxvision_airflow.sla import default_args, task_deadline_alerts, task_limits
from rxvision_airflow.task_runtime import rxvision_task
from rxvision_airflow.validation import ValidateSnapshotOperator

CFG = load_pipeline_config()
S = CFG.nightly


def _run_id() -> str:
    return str(get_current_context()["run_id"])


@dag(
    dag_id=S.dag_id,
    schedule=next_cron_time_only(S.schedule),
    # no start_date, and next_cron_time_only: the first run is the next cron time, not
    # one that passed before the deploy
    catchup=False,
    max_active_runs=1,
    default_args=default_args(CFG),
    deadline=task_deadline_alerts(S),
    tags=["rxvision", "training", "nightly"],
    doc_md=__doc__,
    user_defined_macros={
        "rxv_train_run_id": run_ids.train_run_id,
        "rxv_features": lambda ti: ti.xcom_pull(task_ids="preprocess")["features_uri"],
        "rxv_summary_uri": lambda run: run_ids.summary_uri(S, run),
        "rxv_report_uri": lambda run: f"{S.reports_uri.rstrip('/')}/{run_ids.safe_id(run)}.json",
    },
    params={
        "snapshot_rev": Param(
            None, type=["null", "string"], description="Snapshot tag (default: newest)"
        ),
        "epochs": Param(
            None, type=["null", "integer"], minimum=1, description="Override training.epochs"
        ),
        "force_retrain": Param(
            False, type="boolean", description="Retrain even if the champion saw this snapshot"
        ),
    },
)
def rxvision_nightly_retrain() -> None:
    # The pipeline steps import the data stack (cv2, pyarrow): inside the tasks, so that
    # parsing this file stays cheap.
    @task(**task_limits(CFG, S, "resolve_snapshot"))
    def resolve_snapshot(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from rxvision.pipeline import nightly

        params = params or {}
        with rxvision_task(CFG):
            snapshot = nightly.resolve_snapshot(params.get("snapshot_rev"))
            seen = nightly.champion_trained_on(snapshot["content_hash"])
        if seen and not params.get("force_retrain"):
            raise AirflowSkipException(
                f"champion v{seen} already trained on {snapshot['rev']}: nothing to do "
                "(trigger with force_retrain=true to retrain)"
            )
        return snapshot

    @task(**task_limits(CFG, S, "pull_snapshot"))
    def pull_snapshot(snapshot: dict[str, Any]) -> dict[str, Any]:
        from rxvision.pipeline import nightly

        with rxvision_task(CFG):
            return nightly.pull_snapshot(snapshot["rev"])

    @task(**task_limits(CFG, S, "preprocess"))
    def preprocess(snapshot: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
        from rxvision.pipeline import nightly

        with rxvision_task(CFG):
            return nightly.preprocess(snapshot["rev"], report["report_uri"])

    snapshot = resolve_snapshot()
    pulled = pull_snapshot(snapshot)
    report = ValidateSnapshotOperator(
        task_id="validate",
        snapshot_rev="{{ ti.xcom_pull(task_ids='resolve_snapshot')['rev'] }}",
        report_uri="{{ rxv_report_uri(run_id) }}",
        **task_limits(CFG, S, "validate"),
    )
    pulled >> report
    features = preprocess(snapshot, report.output)

    train = RxVisionTrainOperator(
        task_id="train",
        data_uri="{{ ti.xcom_pull(task_ids='preprocess')['features_uri'] }}",
        train_run_id="{{ rxv_train_run_id(dag.dag_id, run_id, rxv_features(ti)) }}",
        summary_uri="{{ rxv_summary_uri(rxv_train_run_id(dag.dag_id, run_id, rxv_features(ti))) }}",
        snapshot_rev="{{ ti.xcom_pull(task_ids='resolve_snapshot')['rev'] }}",
        snapshot_hash="{{ ti.xcom_pull(task_ids='resolve_snapshot')['content_hash'] }}",
        overrides="{{ 'training.epochs=' ~ params.epochs if params.epochs else '' }}",
        pipeline_config=CFG,
        queue=CFG.train_launcher.queue,
        pool=pools.TRAIN.name,  # overlapping runs (a backfill) take turns
        **task_limits(CFG, S, "train"),
    )
    features >> train

    @task(**task_limits(CFG, S, "evaluate"))
    def evaluate(trained: dict[str, Any]) -> dict[str, Any]:
        from rxvision.pipeline import nightly

        with rxvision_task(CFG):
            return nightly.evaluate(trained["summary_uri"])

    # one slot: gate-compare-promote of two runs never interleave
    @task(pool=pools.REGISTER.name, **task_limits(CFG, S, "register"))
    def register(
        trained: dict[str, Any], evaluation: dict[str, Any], snapshot: dict[str, Any]
    ) -> dict[str, Any]:
        from rxvision.pipeline import nightly

        try:
            with rxvision_task(CFG):
                return nightly.register_and_promote(
                    trained["summary_uri"],
                    snapshot,
                    dag_run_id=_run_id(),
                    container_image=CFG.train_launcher.image,
                )
        except nightly.NotPromoted as exc:
            send(
                nightly_alert("not_promoted", "register", str(exc), severity="warning"),
                CFG,
            )
            raise AirflowSkipException(f"not promoted: {exc}") from exc

    @task(outlets=[CHAMPION], **task_limits(CFG, S, "refresh_scoring"))
    def refresh_scoring(champion: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
        # the Asset event is what starts the scoring DAG; its extra names the version
        outlet_events[CHAMPION].extra = {
            "version": champion["version"],
            "model_uri": champion["model_uri"],
        }
        return champion

    evaluation = evaluate(train.output)
    champion = register(train.output, evaluation, snapshot)
    refresh_scoring(champion)


def nightly_alert(kind: str, task_id: str, summary: str, severity: str = "error") -> Any:
    """An alert about this DAG run."""
    from rxvision.pipeline.alerts import Alert

    return Alert(
        kind=kind,
        dag_id=S.dag_id,
        run_id=_run_id(),
        task_id=task_id,
        summary=summary,
        severity=severity,
    )


rxvision_nightly_retrain()
