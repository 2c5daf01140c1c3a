"""``configs/pipeline.yaml``: schedules, per-task SLA budgets, URIs and the train launcher."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rxvision.config.load import load_config
from rxvision.home import repo_root

ENV_PIPELINE_CONFIG = "RXVISION_PIPELINE_CONFIG"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Connections(_Strict):
    """Airflow connection ids the adapters read endpoints and credentials from."""

    s3: str = "rxvision_s3"
    # The S3 connections of the training container and the scoring tasks, each with its
    # own role_arn in production; null: the same as ``s3``.
    s3_training: str | None = None
    s3_scoring: str | None = None
    mlflow: str = "rxvision_mlflow"
    alerts: str = "rxvision_alerts"

    def s3_for(self, component: str) -> str:
        """The S3 connection id of ``worker`` (data prep, alerts), ``training`` or ``scoring``."""
        per_component = {"worker": None, "training": self.s3_training, "scoring": self.s3_scoring}
        if component not in per_component:
            raise ValueError(f"unknown component {component!r}; known: {', '.join(per_component)}")
        return per_component[component] or self.s3


class Retries(_Strict):
    """Every task's retry policy (exponential backoff between ``delay_s`` and ``max_delay_s``)."""

    count: int = Field(2, ge=0)
    delay_s: float = Field(20, gt=0)
    max_delay_s: float = Field(600, gt=0)
    # the delay multiplies by this after each try (Airflow 3: a multiplier; 0 = fixed delay)
    exponential_backoff: float = Field(2.0, ge=0)


class DagSettings(_Strict):
    """What every DAG has: its id, its cron schedule and per-task SLA budgets (seconds)."""

    dag_id: str
    # cron; null: only triggered by hand (or by an Asset, where the DAG says so)
    schedule: str | None = None
    sla_s: dict[str, float]

    @field_validator("schedule")
    @classmethod
    def _schedule_is_cron(cls, value: str | None) -> str | None:
        # Checked here, so a bad RXVISION_*_SCHEDULE names its key instead of breaking the
        # DAG file's import in the dag-processor.
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r}")
        return value

    def budget(self, task_id: str) -> timedelta:
        """The task's own SLA budget; ``KeyError`` names a task with none."""
        if task_id not in self.sla_s:
            raise KeyError(f"configs/pipeline.yaml: no SLA budget for task {task_id!r}")
        return timedelta(seconds=self.sla_s[task_id])

    def cumulative_budgets(self) -> dict[str, timedelta]:
        """Each task's deadline from the run's start: its budget plus those before it
        (tasks run in the order the config lists them)."""
        total = 0.0
        out: dict[str, timedelta] = {}
        for task_id, seconds in self.sla_s.items():
            total += seconds
            out[task_id] = timedelta(seconds=total)
        return out


class NightlySettings(DagSettings):
    """The retraining DAG."""

    train_config: str = "configs/cpu-quick.yaml"
    reports_uri: str = "s3://rxvision-artifacts/validation"
    runs_uri: str = "s3://rxvision-artifacts/runs"
    checkpoint_root: str = "s3://rxvision-checkpoints"

    def train_config_path(self) -> Path:
        """The training config as an absolute path (relative ones are in the repository)."""
        path = Path(self.train_config)
        return path if path.is_absolute() else repo_root() / path


class ScoringSettings(DagSettings):
    """The batch scoring DAG."""

    input_uri: str = "s3://rxvision-data/incoming"
    output_root: str = "s3://rxvision-predictions/runs"
    latest_uri: str = "s3://rxvision-predictions/latest.json"
    # a night with no new images is normal for a scheduler: the run succeeds with an empty
    # manifest and latest.json keeps pointing at the last predictions. False: it fails.
    allow_empty: bool = True
    # the processed-keys manifests, one per input prefix (rxvision.serving.processed): a
    # run scores only the images new or changed since the last run that published (the
    # DAG's ``full`` param: all of them). null: every run scores every image.
    processed_uri: str | None = "s3://rxvision-predictions/processed"
    # a run whose champion is not the one that scored the manifest's keys scores them all
    rescore_on_new_champion: bool = True


class TrainLauncher(_Strict):
    """How the train task runs ``rxvision train``."""

    mode: Literal["docker", "docker-dev", "local"] = "docker-dev"
    image: str = "rxvision-train:dev"
    docker_url: str | None = None
    network_mode: str = "host"
    # auto, none, or a count
    gpus: str | int = "auto"
    shm_size: str = "2g"
    # The Celery queue of the train task: the GPU workers consume it (the scale profile).
    # LocalExecutor ignores queues.
    queue: str = "gpu"


class PipelineConfig(_Strict):
    """The whole of ``configs/pipeline.yaml``."""

    owner: str = "ml-platform"
    connections: Connections = Connections()
    retries: Retries = Retries()
    hard_limit_factor: float = Field(3.0, ge=1.0)
    # null: alerts are not recorded (status then shows no SLA misses)
    alerts_uri: str | None = "s3://rxvision-artifacts/alerts"
    statsd_prefix: str = "rxvision"
    nightly: NightlySettings
    scoring: ScoringSettings
    smoke: DagSettings = DagSettings(dag_id="rxvision_stack_smoke", sla_s={"ping": 60, "echo": 60})
    drill: DagSettings = DagSettings(dag_id="rxvision_sla_drill", sla_s={"on_time": 20, "late": 20})
    train_launcher: TrainLauncher = TrainLauncher()

    def hard_limit(self, budget: timedelta) -> timedelta:
        """``execution_timeout`` for a task with this SLA budget."""
        return budget * self.hard_limit_factor

    def dags(self) -> list[DagSettings]:
        """Every DAG's settings."""
        return [self.nightly, self.scoring, self.smoke, self.drill]


def default_pipeline_config_path() -> Path:
    """``RXVISION_PIPELINE_CONFIG``, else ``configs/pipeline.yaml`` in the repository."""
    raw = os.environ.get(ENV_PIPELINE_CONFIG)
    return Path(raw) if raw else repo_root() / "configs" / "pipeline.yaml"


def load_pipeline_config(
    path: Path | None = None, overrides: list[str] | None = None
) -> PipelineConfig:
    """The pipeline config, validated (errors name the key)."""
    return load_config(path or default_pipeline_config_path(), PipelineConfig, overrides)
