"""The Assets that connect the DAGs: a new champion triggers the scoring DAG."""

from __future__ import annotations

from airflow.sdk import Asset

# The registered model's champion alias; its events carry the version in ``extra``.
CHAMPION = Asset(
    name="rxvision_champion",
    uri="models://rxvision-pill-classifier/champion",
    group="model",
)
