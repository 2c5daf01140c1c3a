"""Every DAG file imports cleanly in an empty AIRFLOW_HOME and follows the on-call rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p.name for p in (REPO / "dags").glob("*.py"))

# Parsed in a child process so that Airflow reads the config of a clean, temporary home.
PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "file": dag.fileloc, "tags": sorted(dag.tags or []), "doc_md": bool(dag.doc_md),
        "deadlines": {d.name: {"interval": d.interval.total_seconds(),
                               "callback": d.callback.path, "kwargs": d.callback.kwargs}
                      for d in (dag.deadline or [])},
        "tasks": [{"task_id": t.task_id, "retries": t.retries, "owner": t.owner, "pool": t.pool,
                   "backoff": t.retry_exponential_backoff,
                   "on_failure": [getattr(c, "__qualname__", str(c))
                                  for c in (t.on_failure_callback or [])]
                   if isinstance(t.on_failure_callback, list)
                   else [getattr(t.on_failure_callback, "__qualname__", None)],
                   "execution_timeout": t.execution_timeout.total_seconds()
                   if t.execution_timeout else None} for t in dag.tasks],
    }
print(json.dumps(out))
"""

# The first scheduled run of each DAG, as the scheduler computes it from the serialized
# DAG, when the DAG is deployed at each quarter hour of a day: (deploy time, run_after).
FIRST_RUNS = """
import json, sys
import pendulum
import airflow.timetables.trigger as trigger
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
from airflow.timetables.base import TimeRestriction
bag = DagBag(dag_folder=sys.argv[1])
day = pendulum.datetime(2026, 11, 27, tz="UTC")
out = {}
for dag_id, dag in bag.dags.items():
    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
    runs = []
    for quarter in range(96):
        now = day.add(minutes=15 * quarter)
        trigger.utcnow = lambda now=now: now
        info = timetable.next_dagrun_info(
            last_automated_data_interval=None,
            restriction=TimeRestriction(earliest=None, latest=None, catchup=False),
        )
        runs.append([now.isoformat(), info.run_after.isoformat() if info else None])
    out[dag_id] = runs
print(json.dumps(out))
"""


# One DAG file parsed alone: which heavy modules its parse imported.
HEAVY_IMPORTS = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = ("torch", "cv2", "albumentations", "lightning", "pytorch_lightning", "onnxruntime")
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dags": sorted(bag.dags), "heavy": [m for m in heavy if m in sys.modules]}))
"""


def parse_dags(tmp_path: Path, script: str = PARSE, folder: Path = REPO / "dags") -> dict[str, Any]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return parse_dags(tmp_path_factory.mktemp("airflow_home"))


def test_no_import_errors(dagbag: dict[str, Any]) -> None:
    assert dagbag["errors"] == {}


@pytest.mark.parametrize("dag_file", DAG_FILES)
def test_each_dag_file_defines_a_dag(dag_file: str, dagbag: dict[str, Any]) -> None:
    files = {Path(d["file"]).name for d in dagbag["dags"].values()}
    assert dag_file in files


def test_every_dag_has_tags_and_doc(dagbag: dict[str, Any]) -> None:
    for dag_id, dag in dagbag["dags"].items():
        assert "rxvision" in dag["tags"], dag_id
        assert dag["doc_md"], dag_id


def test_every_task_has_retries_owner_and_timeout(dagbag: dict[str, Any]) -> None:
    for dag_id, dag in dagbag["dags"].items():
        for task in dag["tasks"]:
            where = f"{dag_id}.{task['task_id']}"
            assert task["retries"] >= 1, where
            assert task["owner"] not in ("", "airflow"), where
            assert task["execution_timeout"], where


def test_every_task_has_backoff_and_a_failure_alert(dagbag: dict[str, Any]) -> None:
    for dag_id, dag in dagbag["dags"].items():
        for task in dag["tasks"]:
            where = f"{dag_id}.{task['task_id']}"
            assert task["backoff"] and task["backoff"] > 1, where
            assert "on_task_failure" in task["on_failure"], where


def test_every_task_has_its_deadline_alert(dagbag: dict[str, Any]) -> None:
    """One DeadlineAlert per task, due at the task's cumulative budget, whose callback
    lives in an importable module (the triggerer cannot import DAG files)."""
    from rxvision.pipeline.config import load_pipeline_config

    settings = {s.dag_id: s for s in load_pipeline_config().dags()}
    for dag_id, dag in dagbag["dags"].items():
        if "smoke" in dag["tags"]:
            # `airflow dags test` runs it, and fails on DAGs with deadline alerts
            assert dag["deadlines"] == {}, dag_id
            continue
        due = settings[dag_id].cumulative_budgets()
        assert set(dag["deadlines"]) == {f"task_sla:{t['task_id']}" for t in dag["tasks"]}, dag_id
        for task in dag["tasks"]:
            alert = dag["deadlines"][f"task_sla:{task['task_id']}"]
            assert alert["interval"] == due[task["task_id"]].total_seconds()
            assert alert["callback"] == "rxvision_airflow.sla.task_sla_callback"
            assert alert["kwargs"]["task_id"] == task["task_id"]

    for dag_id, dag in dagbag["dags"].items():
        for task in dag["tasks"]:
            # the hard limit sits above the SLA budget: the alert comes first
            assert task["execution_timeout"] > settings[dag_id].sla_s[task["task_id"]]


def test_pipeline_dags_are_scheduled_as_configured(dagbag: dict[str, Any]) -> None:
    from rxvision.pipeline.config import load_pipeline_config

    cfg = load_pipeline_config()
    assert set(dagbag["dags"]) == {s.dag_id for s in cfg.dags()}
    nightly = dagbag["dags"][cfg.nightly.dag_id]
    assert [t["task_id"] for t in nightly["tasks"]] == list(cfg.nightly.sla_s)


def test_a_deploy_never_starts_a_run_for_a_cron_time_already_past(tmp_path: Path) -> None:
    """Deployed at 02:15, the nightly DAG waits for tomorrow's 02:00 (Airflow's default
    would retrain at once for today's): for every quarter hour of a day, every scheduled
    DAG's first run is at or after the deploy."""
    from rxvision.pipeline.config import load_pipeline_config

    first_runs = parse_dags(tmp_path, FIRST_RUNS)
    scheduled = {s.dag_id for s in load_pipeline_config().dags() if s.schedule}
    assert scheduled and scheduled <= set(first_runs)
    for dag_id in scheduled:
        early = [(now, run) for now, run in first_runs[dag_id] if run is None or run < now]
        assert early == [], f"{dag_id}: first run before the deploy: {early[:3]}"
    # and they do run: deployed at 02:15, the nightly run is the next day's 02:00
    nightly = dict(first_runs[load_pipeline_config().nightly.dag_id])
    assert nightly["2026-11-27T02:15:00+00:00"] == "2026-11-28T02:00:00+00:00"


@pytest.mark.parametrize("dag_file", DAG_FILES)
def test_parsing_a_dag_file_imports_no_torch_cv2_or_albumentations(
    dag_file: str, tmp_path: Path
) -> None:
    # the DAG processor parses every file every few minutes: the ML stack loads in tasks
    parsed = parse_dags(tmp_path, HEAVY_IMPORTS, REPO / "dags" / dag_file)
    assert parsed["errors"] == {} and parsed["dags"]
    assert parsed["heavy"] == [], f"{dag_file} imports {parsed['heavy']} at parse time"


def test_training_and_registration_take_one_slot_pools(dagbag: dict[str, Any]) -> None:
    from rxvision.pipeline.pools import REGISTER, TRAIN

    tasks = {t["task_id"]: t for t in dagbag["dags"]["rxvision_nightly_retrain"]["tasks"]}
    assert tasks["train"]["pool"] == TRAIN.name and TRAIN.slots == 1
    assert tasks["register"]["pool"] == REGISTER.name and REGISTER.slots == 1
    assert tasks["pull_snapshot"]["pool"] == "default_pool"
