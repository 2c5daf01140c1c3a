"""configs/pipeline.yaml: budgets, hard limits and the launcher, validated."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rxvision.errors import ConfigError
from rxvision.home import repo_root
from rxvision.pipeline.config import DagSettings, load_pipeline_config

pytestmark = pytest.mark.unit


def test_the_repo_config_covers_every_dag() -> None:
    cfg = load_pipeline_config(repo_root() / "configs" / "pipeline.yaml")
    assert [d.dag_id for d in cfg.dags()] == [
        "rxvision_nightly_retrain",
        "rxvision_batch_scoring",
        "rxvision_stack_smoke",
        "rxvision_sla_drill",
    ]
    assert next(iter(cfg.nightly.sla_s)) == "resolve_snapshot"
    assert cfg.nightly.train_config_path().is_file()
    assert cfg.retries.count >= 1 and cfg.retries.exponential_backoff > 1


def test_schedules_default_to_the_nightly_crons_and_env_overrides_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = repo_root() / "configs" / "pipeline.yaml"
    monkeypatch.delenv("RXVISION_NIGHTLY_SCHEDULE", raising=False)
    monkeypatch.delenv("RXVISION_SCORING_SCHEDULE", raising=False)
    cfg = load_pipeline_config(path)
    assert (cfg.nightly.schedule, cfg.scoring.schedule) == ("0 2 * * *", "0 6 * * *")
    monkeypatch.setenv("RXVISION_NIGHTLY_SCHEDULE", "30 23 * * 1-5")
    monkeypatch.setenv("RXVISION_SCORING_SCHEDULE", "@hourly")
    cfg = load_pipeline_config(path)
    assert (cfg.nightly.schedule, cfg.scoring.schedule) == ("30 23 * * 1-5", "@hourly")


def test_a_bad_cron_names_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RXVISION_SCORING_SCHEDULE", "61 6 * * *")
    with pytest.raises(ConfigError, match=r"scoring\.schedule.*not a cron expression: '61 6"):
        load_pipeline_config(repo_root() / "configs" / "pipeline.yaml")


def test_cumulative_budgets_follow_config_order() -> None:
    s = DagSettings(dag_id="d", sla_s={"a": 10, "b": 5, "c": 1.5})
    assert s.cumulative_budgets() == {
        "a": timedelta(seconds=10),
        "b": timedelta(seconds=15),
        "c": timedelta(seconds=16.5),
    }
    assert s.budget("b") == timedelta(seconds=5)
    with pytest.raises(KeyError, match="no SLA budget for task 'z'"):
        s.budget("z")


def test_hard_limit_is_a_multiple_of_the_budget() -> None:
    cfg = load_pipeline_config(overrides=["hard_limit_factor=2.5"])
    assert cfg.hard_limit(timedelta(seconds=60)) == timedelta(seconds=150)


def test_env_picks_the_launcher_and_train_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RXVISION_TRAIN_LAUNCHER", "local")
    monkeypatch.setenv("RXVISION_TRAIN_CONFIG", "configs/experiment.yaml")
    cfg = load_pipeline_config()
    assert cfg.train_launcher.mode == "local"
    assert cfg.nightly.train_config_path() == repo_root() / "configs" / "experiment.yaml"


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("train_launcher.mode=kubernetes", "train_launcher.mode"),
        ("nightly.sla_s.train=soon", "nightly.sla_s.train"),
        ("hard_limit_factor=0.5", "hard_limit_factor"),
        ("nightly.unknown=1", "nightly.unknown"),
    ],
)
def test_bad_values_name_the_key(override: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_pipeline_config(overrides=[override])


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline_config(tmp_path / "nope.yaml")
