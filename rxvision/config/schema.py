"""Typed schemas for RxVision's YAML configs.

Configs are written in OmegaConf's YAML (``${oc.env:VAR,default}``) and validated into
these pydantic models; unknown keys are refused so that a typo fails loudly, naming the key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowTracking(_Strict):
    experiment_name: str = "rxvision_training"
    tracking_uri: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class Tracking(_Strict):
    mlflow: MlflowTracking = Field(default_factory=MlflowTracking)


class FineTuning(_Strict):
    freeze_backbone: bool = False
    gradual_unfreeze: bool = False


class Model(_Strict):
    architecture: Literal[
        "resnet18",
        "resnet18_fine",
        "resnet34",
        "resnet50",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
    ] = "resnet50"
    pretrained: bool = True
    fine_tuning: FineTuning = Field(default_factory=FineTuning)


class Optimizer(_Strict):
    name: Literal["AdamW", "SGD"] = "AdamW"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)


class Scheduler(_Strict):
    name: Literal["CosineAnnealingWarmRestarts", "none"] = "CosineAnnealingWarmRestarts"
    T_0: int = Field(10, ge=1)
    eta_min: float = Field(1e-6, ge=0)


class Training(_Strict):
    optimizer: Optimizer = Field(default_factory=Optimizer)
    scheduler: Scheduler = Field(default_factory=Scheduler)


class ExperimentConfig(_Strict):
    """The training experiment (``configs/experiment.yaml``). ``data`` (resolution, pill
    localization, augmentation) is checked key by key by ``rxvision.train.config``."""

    tracking: Tracking = Field(default_factory=Tracking)
    model: Model = Field(default_factory=Model)
    training: Training = Field(default_factory=Training)
    data: dict[str, Any] = Field(default_factory=dict)
    # checked key by key by rxvision.train.config (MonitoringConfig)
    monitoring: dict[str, Any] = Field(default_factory=dict)


class S3Stack(_Strict):
    buckets: list[str] = Field(
        default_factory=lambda: [
            "rxvision-data",
            "rxvision-artifacts",
            "rxvision-checkpoints",
            "rxvision-predictions",
        ]
    )
    region: str = "us-east-1"


class MlflowStack(_Strict):
    backend_store_uri: str | None = None
    artifacts_bucket: str = "rxvision-artifacts"


class AirflowStack(_Strict):
    sql_alchemy_conn: str | None = None
    parallelism: int = Field(4, ge=1)
    admin_user: str = "admin"


class CeleryWorker(_Strict):
    """One Celery worker of the ``scale`` profile: the queues it consumes."""

    queues: list[str] = Field(min_length=1)
    concurrency: int = Field(2, ge=1)


def _default_workers() -> dict[str, CeleryWorker]:
    return {
        "default": CeleryWorker(queues=["default"], concurrency=2),
        "gpu": CeleryWorker(queues=["gpu"], concurrency=1),
    }


class ScaleStack(_Strict):
    """The ``scale`` profile: CeleryExecutor, Redis broker, Postgres for Airflow and MLflow."""

    workers: dict[str, CeleryWorker] = Field(default_factory=_default_workers)
    # A task whose worker died is failed (and retried) after this long without a heartbeat.
    task_heartbeat_timeout_s: int = Field(300, ge=10)
    # A task queued this long without a worker starting it is requeued (a lost message).
    task_queued_timeout_s: int = Field(600, ge=30)


class StackPorts(_Strict):
    s3: int = Field(27333, ge=1024, le=65535)
    weed_master: int = Field(27336, ge=1024, le=65535)
    weed_volume: int = Field(27338, ge=1024, le=65535)
    weed_filer: int = Field(27340, ge=1024, le=65535)
    mlflow: int = Field(27350, ge=1024, le=65535)
    airflow_api: int = Field(27380, ge=1024, le=65535)
    airflow_worker_logs: int = Field(27382, ge=1024, le=65535)
    airflow_trigger_logs: int = Field(27384, ge=1024, le=65535)
    statsd: int = Field(27325, ge=1024, le=65535)
    postgres: int = Field(27390, ge=1024, le=65535)
    redis: int = Field(27392, ge=1024, le=65535)


class StackConfig(_Strict):
    """The local stack (``configs/stack.yaml``)."""

    s3: S3Stack = Field(default_factory=S3Stack)
    mlflow: MlflowStack = Field(default_factory=MlflowStack)
    airflow: AirflowStack = Field(default_factory=AirflowStack)
    scale: ScaleStack = Field(default_factory=ScaleStack)
    ports: StackPorts = Field(default_factory=StackPorts)


class Registry(_Strict):
    url: str | None = None
    remote: str = "s3://rxvision-data/dvc"
    endpoint_url: str | None = None
    jobs: int = Field(8, ge=1, le=64)
    shard_size: int = Field(1000, ge=1)
    # pulled snapshots a worker keeps on its disk, by last use (0: all); with any bound,
    # the local DVC cache also keeps only the last fetched snapshot's objects
    local_snapshots: int = Field(2, ge=0)


class FeatureStoreSettings(_Strict):
    uri: str = "s3://rxvision-data/features"
    img_size: int = Field(224, ge=16, le=1024)
    workers: int = Field(2, ge=1)


class DataConfig(_Strict):
    """Snapshots, feature store and validation policy (``configs/data.yaml``).

    ``validation`` is checked by ``rxvision.data.validation.ValidationPolicy``.
    """

    registry: Registry = Field(default_factory=Registry)
    feature_store: FeatureStoreSettings = Field(default_factory=FeatureStoreSettings)
    validation: dict[str, Any] = Field(default_factory=dict)
