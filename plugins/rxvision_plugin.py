"""Registers RxVision's Airflow plugin: the task-duration listener (SLA accounting) and
the operator links (the API server shows links only of registered classes)."""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from rxvision_airflow import listener
from rxvision_airflow.scoring import ReviewGalleryLink
from rxvision_airflow.validation import ValidationReportLink


class RxVisionPlugin(AirflowPlugin):
    """RxVision's listener and links (operators and callbacks are imported from
    ``rxvision_airflow``)."""

    name = "rxvision"
    listeners: ClassVar[list[Any]] = [listener]
    operator_extra_links: ClassVar[list[Any]] = [ValidationReportLink(), ReviewGalleryLink()]
