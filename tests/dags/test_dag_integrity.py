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
        "tasks": [{"task_id": t.task_id, "retries": t.retries, "owner": t.owner,
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


def parse_dags(tmp_path: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}",
    }
    proc = subprocess.run(
        [sys.executable, "-c", PARSE, str(REPO / "dags")],
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
