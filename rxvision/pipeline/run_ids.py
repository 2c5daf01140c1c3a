"""Names of a nightly run's things (training run id, summary and report keys).

Light on purpose: the DAG files call these at parse time, where importing the data and
training stack (cv2, torch) would cost every parse.
"""

from __future__ import annotations

import hashlib
import re

from rxvision.pipeline.config import NightlySettings

__all__ = ["safe_id", "summary_uri", "train_run_id"]


def safe_id(text: str) -> str:
    """``text`` made safe for object keys and run ids (Airflow run ids hold ``:`` and ``+``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def train_run_id(dag_id: str, dag_run_id: str, features_uri: str = "") -> str:
    """The training run id of a DAG run on one feature set: the same on every retry, so a
    retry resumes; a cleared run whose data changed gets a new one (a fresh start)."""
    digest = hashlib.sha256(f"{dag_id}/{dag_run_id}/{features_uri}".encode()).hexdigest()[:12]
    return f"af-{digest}"


def summary_uri(settings: NightlySettings, run_id: str) -> str:
    """Where the train task's container writes its summary JSON."""
    return f"{settings.runs_uri.rstrip('/')}/{run_id}/train_summary.json"
