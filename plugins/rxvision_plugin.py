"""Registers RxVision's Airflow plugin: the task-duration listener (SLA accounting)."""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from rxvision_airflow import listener


class RxVisionPlugin(AirflowPlugin):
    """RxVision's listeners (operators and callbacks are imported from ``rxvision_airflow``)."""

    name = "rxvision"
    listeners: ClassVar[list[Any]] = [listener]
