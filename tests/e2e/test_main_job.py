"""The README's main job, for real: the synthetic snapshot, the nightly DAG run by the
scheduler (training in the Docker container), the champion in MLflow, the scoring DAG
started by the champion Asset, Parquet predictions in S3, status and metrics."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from dashboard_metrics import emitted_names_from_metrics, missing_dashboard_metrics
from e2e_helpers import MODEL, read_parquet, rxvision, wait_for
from mlflow.tracking import MlflowClient

from rxvision.home import repo_root
from rxvision.orchestration.airflow_client import AirflowClient
from rxvision.pipeline.config import load_pipeline_config
from rxvision.pipeline.end_to_end import DemoData
from rxvision.serving.int8_record import INT8_GATE
from rxvision.stack.local_stack import LocalStack
from rxvision.storage.s3 import S3Store

# the first test also waits for the package fixtures: the stack and the main job, whose
# training (the shipped recipe at 60 epochs) takes 4-12 minutes on 2 cores
pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(3600)]

CFG = load_pipeline_config()
DEMO = DemoData()
# the incoming photos of each product and one corrupt file
INCOMING = DEMO.classes * DEMO.incoming_per_class + 1
NIGHTLY_TASKS = list(CFG.nightly.sla_s)


def test_nightly_then_asset_triggered_scoring(main_job: dict[str, Any]) -> None:
    nightly = main_job["nightly"]
    assert nightly["state"] == "success"
    assert nightly["tasks"] == {task: "success" for task in NIGHTLY_TASKS}
    assert nightly["promoted"] is True
    scoring = main_job["scoring"]
    assert scoring["state"] == "success" and scoring["asset_triggered"] is True
    assert scoring["run_id"].startswith("asset_triggered__")


def test_task_instances_are_read_page_by_page(
    main_job: dict[str, Any], client: AirflowClient
) -> None:
    run_id = main_job["nightly"]["run_id"]
    whole = client.task_instances(CFG.nightly.dag_id, run_id)
    paged = client.task_instances(CFG.nightly.dag_id, run_id, page=2)  # the API's own paging
    names = sorted((t["task_id"], t["map_index"]) for t in paged)
    assert names == sorted((t["task_id"], t["map_index"]) for t in whole)
    assert sorted(t for t, _ in names) == sorted(NIGHTLY_TASKS)  # each once, none dropped


def test_validation_report_is_linked_from_the_task(
    main_job: dict[str, Any], client: AirflowClient
) -> None:
    run_id = main_job["nightly"]["run_id"]
    links = client.request(
        "GET", f"/dags/{CFG.nightly.dag_id}/dagRuns/{run_id}/taskInstances/validate/links"
    )
    url = links["extra_links"]["Validation report"]
    assert url.startswith("http://127.0.0.1:") and "X-Amz-Signature=" in url
    report = requests.get(url, timeout=10).json()  # presigned: no credentials needed
    assert report["ok"] is True and report["snapshot_rev"] == main_job["snapshot"]["tag"]
    assert report["summary"]["files"] == main_job["snapshot"]["images"]


def test_review_gallery_is_linked_from_the_publish_task(
    main_job: dict[str, Any], client: AirflowClient
) -> None:
    run_id = main_job["scoring"]["run_id"]
    links = client.request(
        "GET", f"/dags/{CFG.scoring.dag_id}/dagRuns/{run_id}/taskInstances/publish/links"
    )
    url = links["extra_links"]["Review gallery"]
    assert url.startswith("http://127.0.0.1:") and "X-Amz-Signature=" in url
    page = requests.get(url, timeout=10)  # presigned: no credentials needed
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'id="review-count"' in page.text


def test_training_ran_in_the_container(main_job: dict[str, Any], e2e_stack: LocalStack) -> None:
    run_dir = f"run_id={main_job['nightly']['run_id']}"
    logs = e2e_stack.home.root / "airflow" / "logs" / f"dag_id={CFG.nightly.dag_id}" / run_dir
    text = "".join(p.read_text() for p in (logs / "task_id=train").glob("*.log"))
    assert "docker-dev launcher" in text
    assert "Starting docker container from image rxvision-train:dev" in text
    assert "summary written to s3://" in text
    # credentials go in as private_environment: never in the log
    assert e2e_stack.creds.s3_secret_key not in text


def test_champion_registered_with_lineage(
    main_job: dict[str, Any], e2e_env: dict[str, str]
) -> None:
    client = MlflowClient(e2e_env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias(MODEL, "champion")
    tags = champion.tags
    assert tags["rxvision.dataset.snapshot_rev"] == main_job["snapshot"]["tag"]
    assert tags["rxvision.airflow.dag_run_id"] == main_job["nightly"]["run_id"]
    assert tags["rxvision.container.image"] == "rxvision-train:dev"
    assert float(tags["rxvision.eval.top1"]) >= CFG_MIN_TOP1
    assert tags["rxvision.git.commit"]
    # the serving exports were checked for parity and logged with the version
    for runtime in ("torchscript", "onnxruntime"):
        assert float(tags[f"rxvision.serving.{runtime}.max_abs_diff"]) <= float(
            tags[f"rxvision.serving.{runtime}.tolerance"]
        )


CFG_MIN_TOP1 = 0.8


def test_the_main_job_pages_no_one(main_job: dict[str, Any], e2e_env: dict[str, str]) -> None:
    """Nothing went wrong, so no alert opened an incident: not the training monitor (a
    perfect validation score that stays perfect, a minute of a busy machine), not an SLA
    nor a task failure, in the nightly run or the scoring run it started."""
    champion = MlflowClient(e2e_env["MLFLOW_TRACKING_URI"]).get_model_version_by_alias(
        MODEL, "champion"
    )
    runs = {
        main_job["nightly"]["run_id"],
        main_job["scoring"]["run_id"],
        champion.tags["rxvision.training.run_id"],
    }
    found = json.loads(rxvision(e2e_env, "incidents", "list", "--json").stdout)
    assert [(i["kind"], i["events"][0]["summary"]) for i in found if i["run_id"] in runs] == []


def test_predictions_on_s3(
    main_job: dict[str, Any], e2e_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in (
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.setenv(key, e2e_env[key])
    store = S3Store()
    latest = json.loads(store.get_bytes(CFG.scoring.latest_uri))
    out = latest["uri"]
    assert store.exists(f"{out}/_SUCCESS")
    manifest = json.loads(store.get_bytes(f"{out}/_manifest.json"))
    # shards of 16 images: one mapped task each
    assert len(manifest["shards"]) == math.ceil(INCOMING / 16)
    rows = [r for s in manifest["shards"] for r in read_parquet(store, s["uri"])]
    keys = [r["key"] for r in rows]
    assert len(rows) == latest["rows"] == INCOMING and len(set(keys)) == INCOMING
    errors = [r for r in rows if r["error"]]
    assert [Path(r["key"]).name for r in errors] == ["corrupt-0001.jpg"]
    good = [r for r in rows if not r["error"]]
    for row in good:
        assert row["model_version"].endswith("/1") or row["model_version"] == "1", row
        assert row["label"] == row["topk_labels"][0]
        assert 0 <= row["confidence"] <= 1 and isinstance(row["needs_review"], bool)
    # the incoming keys are <product>/img-N.jpg: the champion should read them right
    correct = sum(r["label"] == r["key"].split("/")[-2] for r in good)
    assert correct / len(good) >= 0.9
    # scored by its INT8 model exactly when its export judged one fit (else fp32 ONNX)
    tags = (
        MlflowClient(e2e_env["MLFLOW_TRACKING_URI"])
        .get_model_version_by_alias(MODEL, "champion")
        .tags
    )
    assert tags["rxvision.serving.int8.kept"] in {"true", "false"}
    judged = tags.get("rxvision.serving.int8.gate") == INT8_GATE
    assert {r["runtime"] for r in good} == {"onnxruntime-int8" if judged else "onnxruntime"}


def test_status_json(main_job: dict[str, Any], e2e_env: dict[str, str]) -> None:
    status = json.loads(rxvision(e2e_env, "status", "--json").stdout)
    assert status["champion"]["name"] == MODEL and status["champion"]["version"] == "1"
    assert status["champion"]["metrics"]["test_top1"] >= CFG_MIN_TOP1
    runs = status["dag_runs"]
    assert runs[CFG.nightly.dag_id]["state"] == "success"
    assert runs[CFG.scoring.dag_id]["state"] == "success"
    assert status["predictions"]["rows"] == INCOMING
    assert status["predictions"]["uri"].startswith("s3://rxvision-predictions/runs/")
    assert status["predictions"]["error_rate"] == pytest.approx(1 / INCOMING, abs=1e-4)
    assert isinstance(status["sla_misses"]["count"], int)
    # how the champion scores on a CPU, as its export judged its INT8 model
    int8 = status["champion"]["int8"]
    assert int8["kept"] in {"true", "false"} and int8["scores"] == (int8.get("gate") == INT8_GATE)


EXPECTED_METRICS = (
    "rxvision.airflow.ti.finish",  # Airflow's own
    "rxvision.validation.files",
    "rxvision.train.samples_per_s",
    "rxvision.scoring.images",
    f"rxvision.task.duration.{CFG.nightly.dag_id}.train",
    f"rxvision.task.duration.{CFG.scoring.dag_id}.score_shard",
)


def _metric_names(metrics: dict[str, Any]) -> set[str]:
    return set(metrics["counters"]) | set(metrics["gauges"]) | set(metrics["timers"])


@pytest.fixture(scope="module")
def run_metrics(main_job: dict[str, Any], e2e_stack: LocalStack) -> dict[str, Any]:
    """The receiver's metrics once the last task's listener datagrams have landed (they
    are sent after the task reports success, and the receiver saves every 0.5 s)."""

    def settled() -> dict[str, Any] | None:
        metrics = e2e_stack.metrics()
        return metrics if set(EXPECTED_METRICS) <= _metric_names(metrics) else None

    return wait_for(
        settled,
        timeout=30,
        what="the main job's metrics at the statsd receiver",
    )


def test_metrics_under_one_prefix(main_job: dict[str, Any], run_metrics: dict[str, Any]) -> None:
    names = _metric_names(run_metrics)
    for expected in EXPECTED_METRICS:
        assert expected in names, expected
    assert run_metrics["gauges"]["rxvision.validation.files"] == main_job["snapshot"]["images"]
    assert all(name.startswith("rxvision.") for name in names)


def test_grafana_dashboard_reads_metrics_the_run_emitted(run_metrics: dict[str, Any]) -> None:
    """Each panel of infra/compose's dashboard, mapped back through the statsd exporter's
    rules, finds its metrics among those the statsd receiver recorded in this run."""
    compose = repo_root() / "infra" / "compose"
    emitted = emitted_names_from_metrics(run_metrics)
    missing = missing_dashboard_metrics(
        compose / "grafana" / "dashboards" / "rxvision.json",
        compose / "statsd-mapping.yml",
        emitted,
    )
    assert missing == {}, f"panels without data: {missing}"


def test_no_scheduled_run_can_interleave(main_job: dict[str, Any], client: AirflowClient) -> None:
    # The stack's crons sit 12 h from its start (stack_up), so this run's checks see only
    # the runs the test triggered, whatever the hour CI runs at. Two hours is longer than
    # what is left of any CI run (90 min in all); 11 h held only within an hour of the
    # stack's start, which a slow machine's e2e tier can pass.
    soon = datetime.now(UTC) + timedelta(hours=2)
    for settings in (CFG.nightly, CFG.scoring):
        dag = client.request("GET", f"/dags/{settings.dag_id}")
        assert dag["timetable_summary"] != settings.schedule
        assert datetime.fromisoformat(dag["next_dagrun_run_after"]) > soon


def test_the_main_job_again_skips_the_night_and_status_says_why(
    main_job: dict[str, Any], e2e_env: dict[str, str], tmp_path: Path
) -> None:
    """The README: run it again and the nightly skips (the champion already trained on
    this snapshot) and the images are scored again. Status calls that night "nothing
    new", not a refused model. Last in this file: it moves the runs status reads."""
    out = tmp_path / "again.json"
    # no --epochs: the night skips before training, whatever the recipe
    rxvision(e2e_env, "pipeline", "run", "--timeout", "600", "--summary", str(out), timeout=900)
    again = json.loads(out.read_text())
    assert again["snapshot"]["tag"] == main_job["snapshot"]["tag"]
    assert again["nightly"]["state"] == "success" and again["nightly"]["promoted"] is False
    assert again["nightly"]["tasks"] == {task: "skipped" for task in NIGHTLY_TASKS}
    assert again["scoring"]["state"] == "success" and again["scoring"]["asset_triggered"] is False

    status = json.loads(rxvision(e2e_env, "status", "--json").stdout)
    nightly = status["dag_runs"][CFG.nightly.dag_id]
    assert nightly["run_id"] == again["nightly"]["run_id"]
    assert nightly["outcome"] == "nothing new", nightly
    assert "already trained on this snapshot" in nightly["reason"]
    assert "failed_gates" not in nightly
    assert status["champion"]["version"] == "1"
    table = rxvision({**e2e_env, "COLUMNS": "300"}, "status").stdout
    assert "success, nothing new: the champion already trained on this snapshot" in table
    assert "not promoted" not in table
