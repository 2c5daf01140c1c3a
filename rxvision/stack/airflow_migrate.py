"""Airflow's metadata database for the local stack: ``db migrate``, then the pools.

Run in the background while SeaweedFS and MLflow start (it takes the longest of the set-up
steps), and waited for before the Airflow servers start.
"""

from __future__ import annotations

import shlex
import subprocess

from rxvision.errors import StackError
from rxvision.pipeline.pools import write_pools_file
from rxvision.stack import services

MIGRATE_LOG = "airflow-db-migrate.log"


def start_airflow_migrate(layout: services.StackLayout) -> subprocess.Popen[bytes]:
    """Start ``airflow db migrate && airflow pools import`` for ``layout``; its output goes
    to the home's ``airflow-db-migrate.log``."""
    out = (layout.home.logs_dir / MIGRATE_LOG).open("ab")
    # then the one-slot pools: the scheduler never schedules a task of a missing pool
    layout.airflow_home.mkdir(parents=True, exist_ok=True)
    pools = write_pools_file(layout.airflow_home / "pools.json")
    airflow = shlex.quote(str(services.bin_dir() / "airflow"))
    script = f"{airflow} db migrate && {airflow} pools import {shlex.quote(str(pools))}"
    return subprocess.Popen(
        ["/bin/sh", "-c", script],
        env=services.airflow_env(layout),
        cwd=layout.airflow_home,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def finish_airflow_migrate(
    proc: subprocess.Popen[bytes], layout: services.StackLayout, timeout_s: float
) -> None:
    """Wait for the migration; a failure raises ``StackError`` with its log's tail."""
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = -1
    if code != 0:
        tail = (layout.home.logs_dir / MIGRATE_LOG).read_text().splitlines()[-30:]
        raise StackError("airflow db migrate / pools import failed:\n" + "\n".join(tail))
