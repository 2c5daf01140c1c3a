"""A small client of Airflow 3's REST API (``/api/v2``), with no Airflow import.

Used by ``rxvision stack check``, ``rxvision status`` and the end-to-end tests to trigger
DAG runs through the real scheduler and read their state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests

from rxvision.errors import RxVisionError

TERMINAL_STATES = {"success", "failed"}
# task instances per request: the API server's default maximum_page_limit
PAGE = 100


class AirflowApiError(RxVisionError):
    """The Airflow API refused a request or a DAG run did not finish as expected."""


@dataclass
class AirflowClient:
    """Token-authenticated calls to one Airflow API server."""

    base_url: str
    username: str
    password: str
    timeout_s: float = 10.0
    _token: str | None = field(default=None, repr=False)

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            resp = requests.post(
                f"{self.base_url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=self.timeout_s,
            )
            if resp.status_code not in (200, 201):
                raise AirflowApiError(
                    f"Airflow login as {self.username!r} failed: HTTP {resp.status_code}"
                )
            self._token = str(resp.json()["access_token"])
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``/api/v2{path}`` and return the JSON answer."""
        resp = requests.request(
            method,
            f"{self.base_url}/api/v2{path}",
            headers=self._headers(),
            timeout=self.timeout_s,
            **kwargs,
        )
        if resp.status_code >= 400:
            raise AirflowApiError(
                f"Airflow API {method} {path}: HTTP {resp.status_code}: {resp.text[:300]}"
            )
        return resp.json() if resp.content else None

    def health(self) -> dict[str, Any]:
        """``/api/v2/monitor/health`` (needs no token)."""
        resp = requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=self.timeout_s)
        return dict(resp.json())

    def wait_for_dag(self, dag_id: str, timeout_s: float = 120) -> dict[str, Any]:
        """Wait until the dag-processor has parsed ``dag_id``; unpause it; return it."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                dag = self.request("GET", f"/dags/{dag_id}")
                if dag.get("is_paused"):
                    self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
                return dict(dag)
            except AirflowApiError as exc:
                if time.monotonic() > deadline:
                    raise AirflowApiError(
                        f"DAG {dag_id!r} did not appear within {timeout_s:.0f}s: {exc}"
                    ) from exc
                time.sleep(2)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger a run now; return its ``dag_run_id``."""
        run = self.request(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
        )
        return str(run["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One DAG run."""
        return dict(self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str, *, page: int = PAGE) -> list[dict[str, Any]]:
        """Every task instance of one DAG run, ``page`` per request (the API answers 50
        unless asked for more, and a scoring run maps up to 512 shards)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        found: list[dict[str, Any]] = []
        while True:
            data = self.request("GET", path, params={"limit": page, "offset": len(found)})
            answered = list(data["task_instances"])
            found += answered
            if not answered or len(found) >= int(data.get("total_entries", 0)):
                return found

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 600) -> str:
        """Poll a run until it ends; return its state (``AirflowApiError`` on time-out)."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = str(self.dag_run(dag_id, run_id)["state"])
            if state in TERMINAL_STATES:
                return state
            if time.monotonic() > deadline:
                raise AirflowApiError(
                    f"run {run_id} of {dag_id} still {state} after {timeout_s:.0f}s"
                )
            time.sleep(2)
