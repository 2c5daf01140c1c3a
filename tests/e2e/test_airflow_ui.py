"""The Airflow UI as the person on call sees it after the main job, in headless Chromium:
signing in with the stack's admin credentials (and a wrong password refused), every
Airflow component healthy, the DAGs, the night's tasks and their states, a task's log
read back from the stack's log folder (no secret in it), and the operators' extra links
opening the validation report and the review gallery."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from rxvision.pipeline.config import load_pipeline_config
from rxvision.stack.local_stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(3600)]

CFG = load_pipeline_config()
# the health badge's icon when a component is healthy (lucide's check; a cross otherwise)
HEALTHY_ICON = "M20 6 9 17l-5-5"
HEALTH = ("MetaDatabase", "Scheduler", "Triggerer", "Dag Processor")


def sign_in(page: Any, base: str, user: str, password: str) -> None:
    """Through the login form the UI redirects an anonymous visitor to."""
    page.goto(f"{base}/", wait_until="networkidle")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def task_states(page: Any) -> dict[str, str]:
    """The run page's task-instance table: task id -> the state it shows."""
    page.get_by_text(f"{len(CFG.nightly.sla_s)} Task Instances").wait_for()
    rows = page.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()).filter(t => t))"
    )
    return {cells[0]: cells[1] for cells in rows}


def extra_link(page: Any, base: str, dag_id: str, run_id: str, task_id: str, name: str) -> str:
    """The href of an operator's extra link, from the task instance's Details tab."""
    page.goto(f"{base}/dags/{dag_id}/runs/{quote(run_id)}/tasks/{task_id}")
    page.get_by_role("link", name="Details", exact=True).click()
    link = page.get_by_role("link", name=name, exact=True)
    link.wait_for()
    return str(link.get_attribute("href"))


def test_a_wrong_password_is_refused_and_the_api_needs_a_token(
    e2e_stack: LocalStack, page: Any
) -> None:
    base = e2e_stack.urls()["airflow"]
    sign_in(page, base, e2e_stack.config.airflow.admin_user, "not-the-password")
    page.get_by_text("Invalid credentials").wait_for()
    assert "/auth/login" in page.url
    assert page.request.get(f"{base}/api/v2/dags").status == 401


def test_the_ui_shows_the_nights_runs_logs_and_links(
    main_job: dict[str, Any], e2e_stack: LocalStack, page: Any
) -> None:
    base = e2e_stack.urls()["airflow"]
    sign_in(page, base, e2e_stack.config.airflow.admin_user, e2e_stack.creds.airflow_admin_password)

    # home: each Airflow component healthy, and no DAG failed to import
    for component in HEALTH:
        badge = page.get_by_test_id("state-badge").filter(has_text=component)
        badge.wait_for()
        assert HEALTHY_ICON in badge.inner_html(), f"{component}: {badge.inner_html()}"
    page.get_by_text("Active Dags").wait_for()
    page.wait_for_load_state("networkidle")
    assert page.get_by_text("Dag Import Error").count() == 0

    page.goto(f"{base}/dags")
    for dag_id in (CFG.nightly.dag_id, CFG.scoring.dag_id):
        page.get_by_role("link", name=dag_id, exact=True).wait_for()

    nightly, run_id = CFG.nightly.dag_id, main_job["nightly"]["run_id"]
    page.goto(f"{base}/dags/{nightly}/runs/{quote(run_id)}")
    assert task_states(page) == {task: "Success" for task in CFG.nightly.sla_s}

    # the training container's log, as the api-server reads it from the log folder
    page.goto(f"{base}/dags/{nightly}/runs/{quote(run_id)}/tasks/train")
    page.get_by_text("summary written to s3://", exact=False).first.wait_for()
    assert e2e_stack.creds.s3_secret_key not in page.inner_text("body")

    report_url = extra_link(page, base, nightly, run_id, "validate", "Validation report")
    page.goto(report_url)
    report = json.loads(page.inner_text("body"))
    assert report["ok"] is True and report["snapshot_rev"] == main_job["snapshot"]["tag"]

    scoring = main_job["scoring"]["run_id"]
    gallery_url = extra_link(page, base, CFG.scoring.dag_id, scoring, "publish", "Review gallery")
    page.goto(gallery_url, wait_until="load")
    assert page.title().startswith("RxVision review")
    images = page.evaluate("[...document.images].map(i => [i.alt, i.complete, i.naturalWidth])")
    assert images and all(complete and width > 0 for _, complete, width in images), images
