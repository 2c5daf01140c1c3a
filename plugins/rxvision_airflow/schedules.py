"""Cron schedules whose first run is the next cron time, never one that already passed.

Airflow's ``CronTriggerTimetable`` with ``catchup=False`` and the default
``run_immediately=False`` still runs the most recent past cron time when the DAG
appears within a tenth of the period after it: deploying the nightly DAG at 04:00
would retrain at once for 02:00. A zero buffer makes the first run the next one.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.timetables.trigger import CronTriggerTimetable


def next_cron_time_only(cron: str) -> CronTriggerTimetable:
    """A UTC cron timetable that never starts with a run for a cron time already past."""
    return CronTriggerTimetable(cron, timezone="UTC", run_immediately=timedelta(0))
