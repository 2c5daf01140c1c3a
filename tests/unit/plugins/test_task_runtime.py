"""A task forked from a Celery (billiard) pool process can start process pools."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any

import billiard.process
import pytest
from billiard.process import AuthenticationString as BilliardAuthKey

from rxvision_airflow.task_runtime import children_allowed, main_module_hidden, worker_task_slots

pytestmark = pytest.mark.unit


@pytest.fixture
def celery_pool_process() -> Iterator[Any]:
    """This process as a prefork pool child sees it: billiard's process object as the
    current process, daemonic, with billiard's authkey."""
    saved = multiprocessing.process._current_process  # type: ignore[attr-defined]
    process = billiard.process.current_process()
    process._config["daemon"] = True
    process._config["authkey"] = BilliardAuthKey(b"k" * 32)
    multiprocessing.process._current_process = process  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        multiprocessing.process._current_process = saved  # type: ignore[attr-defined]
        process._config["daemon"] = False


def test_pool_refused_as_celery_leaves_the_process(celery_pool_process: object) -> None:
    ctx = multiprocessing.get_context("forkserver")
    with pytest.raises(AssertionError, match="daemonic"), main_module_hidden():
        ctx.Pool(1)


def test_forkserver_pool_runs_inside_children_allowed(celery_pool_process: Any) -> None:
    ctx = multiprocessing.get_context("forkserver")
    with main_module_hidden(), children_allowed(), ctx.Pool(1) as pool:
        assert pool.apply(abs, (-3,)) == 3
    config = celery_pool_process._config
    assert config["daemon"] is True
    assert isinstance(config["authkey"], BilliardAuthKey)


@pytest.mark.parametrize(
    ("env", "slots"),
    [
        ({"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "4"}, 4),
        (
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": "32",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "3",
            },
            3,
        ),
    ],
)
def test_worker_task_slots_follow_the_executor(
    env: dict[str, str], slots: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert worker_task_slots() == slots
