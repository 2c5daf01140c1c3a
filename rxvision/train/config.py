"""The typed schema of a training config (``configs/cpu-quick.yaml``, ``configs/experiment.yaml``).

``TrainConfig`` extends the experiment schema of ``rxvision.config.schema``: every key of
``configs/experiment.yaml`` keeps its meaning, and the sections below add what a training
run needs (data loading, hardware, checkpoints). Unknown keys are refused, naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_validator, model_validator

from rxvision.config.load import load_config
from rxvision.config.schema import FineTuning, Model, Optimizer, Scheduler, Tracking, Training
from rxvision.data.imaging import ImageSpec, Resample
from rxvision.data.localize import CropSpec

Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed"]


class Strict(BaseModel):
    """Unknown keys refused, values frozen: the same rules as ``rxvision.config.schema``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FineTuningConfig(FineTuning):
    """Freezing of the backbone.

    ``freeze_backbone`` alone: the backbone stays frozen for the whole run (only the head
    trains). ``gradual_unfreeze``: the backbone starts frozen and is unfrozen in
    ``unfreeze_stages`` groups of blocks, from the top, one group per epoch from
    ``unfreeze_at_epoch`` on.
    """

    unfreeze_at_epoch: int = Field(1, ge=0)
    unfreeze_stages: int = Field(1, ge=1)
    backbone_lr_ratio: float = Field(0.1, gt=0, le=1)

    @property
    def any_frozen(self) -> bool:
        """Whether some backbone block is frozen at some point of the run."""
        return self.freeze_backbone or self.gradual_unfreeze


class ModelConfig(Model):
    """The network: a torchvision backbone, its weights, and a new classification head.

    ``pretrained: true`` loads a torchvision-format ``state_dict`` from ``weights_uri`` (a
    local file or ``s3://`` URI); nothing is downloaded from the internet. Without
    weights, training stops with an error unless ``allow_random_init`` is true.
    """

    weights_uri: str | None = None
    allow_random_init: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)
    fine_tuning: FineTuningConfig = Field(default_factory=FineTuningConfig)


class OptimizerConfig(Optimizer):
    """The seed's optimizer (AdamW, lr 1e-4, weight decay 1e-5) and SGD's momentum."""

    momentum: float = Field(0.9, ge=0, lt=1)


class SchedulerConfig(Scheduler):
    """The seed's scheduler (CosineAnnealingWarmRestarts, T_0 10 epochs, eta_min 1e-6).

    ``T_mult`` and ``warmup_epochs`` (a linear warm-up from ``lr * warmup_start_factor``
    before the cosine schedule) are additions; the defaults keep the seed's behaviour.
    """

    T_mult: int = Field(1, ge=1)
    warmup_epochs: int = Field(0, ge=0)
    warmup_start_factor: float = Field(0.1, gt=0, le=1)


class BatchSizeFinderConfig(Strict):
    """Lightning's batch-size finder (``Tuner.scale_batch_size``) before a GPU run: the
    largest per-device batch that fits in memory, found by ``mode`` (power: doubling;
    binsearch: then bisecting) from ``training.batch_size`` within ``max_trials`` tries
    of ``steps_per_trial`` steps, capped at ``max_batch_size``. Off by default; skipped
    with a log line on CPU (memory is not what limits a CPU batch) and with more than
    one device (the tuner does not run under DDP). The size found is recorded beside
    the run's checkpoints, so a resumed run keeps it. The learning rate is not scaled.
    """

    enabled: bool = False
    mode: Literal["power", "binsearch"] = "power"
    max_trials: int = Field(6, ge=1, le=25)
    steps_per_trial: int = Field(3, ge=1)
    max_batch_size: int = Field(1024, ge=1)


class TrainingConfig(Training):
    """The optimisation: how long, in what batches, and with what seed.

    The run's length is a budget of optimizer steps: ``max_steps`` when given, else
    ``epochs`` times the optimizer steps of one epoch. Counting steps (not epochs) lets a
    run killed mid-epoch and resumed stop at exactly the same step.
    """

    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    accumulate_grad_batches: int = Field(1, ge=1)
    gradient_clip_val: float | None = Field(None, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    seed: int = 42
    val_every_n_epochs: int = Field(1, ge=1)
    log_every_n_steps: int = Field(10, ge=1)
    batch_size_finder: BatchSizeFinderConfig = Field(default_factory=BatchSizeFinderConfig)


class LocalizeConfig(Strict):
    """Pill localization before the resize (``rxvision.data.localize``): find the one pill,
    crop a square around it with ``margin`` of its long side on every side, and level
    the long axis of elongated pills (with ``stretch``, crop an elongated pill's own
    rectangle, which the square resize stretches). The thresholds are those of
    ``CropSpec``."""

    enabled: bool = False
    margin: float = Field(0.12, ge=0, le=1)
    orient: bool = True
    min_elongation: float = Field(1.15, ge=1)
    work_size: int = Field(192, ge=32, le=1024)
    min_contrast: float = Field(12.0, ge=0)
    min_area: float = Field(0.004, gt=0, lt=1)
    max_area: float = Field(0.85, gt=0, le=1)
    second_ratio: float = Field(0.4, gt=0, le=1)
    mask_background: bool = False
    stretch: bool = False
    imprint_contrast: float = Field(0.0, ge=0, le=40)
    imprint_inset: float = Field(0.0, ge=0, lt=0.8)

    def crop_spec(self) -> CropSpec | None:
        """The crop of the preprocessing contract (None: the whole frame)."""
        if not self.enabled:
            return None
        return CropSpec(**self.model_dump(exclude={"enabled"}))


class DataLoadingConfig(Strict):
    """How images become batches: split, resolution, augmentation and DataLoader tuning.

    Splits are by content (``rxvision.data.splits``): ``val_fraction`` and
    ``test_fraction`` of the content groups go to validation (checkpoint choice) and test
    (the reported metrics and the gates); ``split_seed`` salts the assignment (change it
    and every image may move). ``near_duplicate_distance`` is the perceptual-hash distance
    (bits of 64) under which two photos of a class count as copies of each other.
    ``img_size`` and ``resample`` are the preprocessing contract stored with the model.
    ``num_workers: null`` picks min(4, CPU cores - 1); ``pin_memory`` is used on CUDA only.
    """

    img_size: int = Field(224, ge=16, le=1024)
    resample: Resample = "bilinear"
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)
    split_seed: int = 0
    near_duplicate_distance: int = Field(6, ge=-1, le=16)
    localize: LocalizeConfig = Field(default_factory=LocalizeConfig)
    augment: bool = True
    rotate90_p: float = Field(0.5, ge=0, le=1)
    flip_p: float = Field(0.5, ge=0, le=1)
    affine_p: float = Field(0.5, ge=0, le=1)
    rotate_limit: float = Field(45.0, ge=0, le=180)
    rotate180_p: float = Field(0.0, ge=0, le=1)
    scale_limit: float = Field(0.1, ge=0, lt=1)
    color_p: float = Field(0.0, ge=0, le=1)
    brightness: float = Field(0.2, ge=0, le=1)
    contrast: float = Field(0.2, ge=0, le=1)
    saturation: float = Field(0.2, ge=0, le=1)
    hue: float = Field(0.02, ge=0, le=0.5)
    cast_limit: float = Field(0.0, ge=0, lt=1)
    blur_p: float = Field(0.0, ge=0, le=1)
    # passes over the training set per epoch, each freshly shuffled and augmented: a small
    # set gets enough optimizer steps without validating and checkpointing after each pass
    epoch_repeats: int = Field(1, ge=1, le=100)
    num_workers: int | None = Field(None, ge=0)
    prefetch_factor: int = Field(2, ge=1)
    cache_images: bool = Field(
        False, description="Decode an image folder once into memory (small datasets)."
    )
    # feature sets downloaded from S3 (``--data s3://...``) kept in
    # $RXVISION_HOME/cache/features, by last use (0: all of them)
    local_feature_sets: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _leaves_training_data(self) -> DataLoadingConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"data.val_fraction ({self.val_fraction}) + data.test_fraction "
                f"({self.test_fraction}) must leave at least 10% of the images for training"
            )
        return self

    @property
    def image_spec(self) -> ImageSpec:
        """The preprocessing contract of models trained with this config."""
        return ImageSpec(
            img_size=self.img_size, resample=self.resample, crop=self.localize.crop_spec()
        )

    @property
    def split_salt(self) -> str:
        """The salt of the content-hash split."""
        return f"rxvision-split-v1/{self.split_seed}"


class EvaluationConfig(Strict):
    """The final evaluation: temperature scaling fitted on validation (``calibrate``), and
    the review threshold chosen as the confidence above which predictions on validation
    are right ``review_precision`` of the time (stored with the model; scoring uses it
    when ``configs/serving.yaml`` ``review_threshold`` is null)."""

    calibrate: bool = True
    review_precision: float = Field(0.99, gt=0, le=1)


class TrainerConfig(Strict):
    """Hardware and numerics: where the run goes, how many processes, what precision.

    ``precision: auto`` is bf16-mixed on GPUs that support bf16 (else 16-mixed), and on
    CPUs bf16-mixed only with native bf16 instructions (AVX-512 BF16 or AMX); otherwise
    32-true, since emulated bf16 is several times slower than fp32.
    """

    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: int | Literal["auto"] = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp"] = "auto"
    precision: Precision = "auto"
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False
    progress_every_n_steps: int = Field(10, ge=1)


class CheckpointConfig(Strict):
    """Where and how often full checkpoints go.

    ``root`` is a local folder or an ``s3://bucket/prefix``; the run's checkpoints live
    under ``<root>/<run_id>/``. ``null`` means ``$RXVISION_HOME/checkpoints``.
    """

    root: str | None = None
    every_n_steps: int | None = Field(50, ge=1)
    keep_last: int = Field(3, ge=1)
    resume: bool = True


class MonitoringConfig(Strict):
    """Alert thresholds checked during training (``rxvision.train.monitoring``).

    Each crossing sends one alert per metric per run (log, statsd, the webhook in
    ``RXVISION_ALERT_WEBHOOK_URL``, a record under ``alerts_uri``). ``null`` turns a
    threshold off. Resource thresholds are checked on rank 0 every
    ``check_every_n_steps`` optimizer steps:

    - ``max_rss``: peak resident set of the training process (bytes, or ``"12GiB"``);
    - ``max_gpu_memory_fraction``: peak memory the CUDA allocator held over the GPU's
      total (skipped, with a log line, on CPU);
    - ``min_throughput_fraction``: the median images/s of the last ``throughput_window``
      batches below this fraction of the running median, after ``throughput_warmup_steps``
      batches, at every check for ``throughput_sustain_s`` seconds (0: the first check;
      a value >= 1 always fires: a drill);
    - ``min_free_disk``: free space where checkpoints are written (the local staging folder
      for an S3 root).

    ``nonfinite_loss``: checked on every step before the backward pass; ``stop`` alerts and
    stops the run with ``NonFiniteLoss`` (the newest checkpoint, always finite, is kept),
    ``alert`` only alerts. ``plateau_evals``: alert when ``plateau_metric`` did not improve
    by more than ``plateau_min_delta`` for that many evaluations, unless its best reached
    ``plateau_target`` (a validation top-1 of 1.0 cannot improve: no alert);
    ``stop_on_plateau`` then also ends the fit early (evaluation and logging of the best
    checkpoint still run).
    """

    check_every_n_steps: int = Field(10, ge=1)
    max_rss: ByteSize | None = None
    max_gpu_memory_fraction: float | None = Field(None, gt=0)
    min_throughput_fraction: float | None = Field(None, gt=0)
    throughput_warmup_steps: int = Field(20, ge=0)
    throughput_window: int = Field(10, ge=1)
    throughput_sustain_s: float = Field(0.0, ge=0)
    nonfinite_loss: Literal["stop", "alert", "off"] = "stop"
    plateau_evals: int | None = Field(None, ge=1)
    plateau_metric: str = "val/top1"
    plateau_mode: Literal["max", "min"] = "max"
    plateau_min_delta: float = Field(0.0, ge=0)
    plateau_target: float | None = None
    stop_on_plateau: bool = False
    min_free_disk: ByteSize | None = None
    alerts_uri: str | None = None

    @field_validator("alerts_uri")
    @classmethod
    def _s3_only(cls, value: str | None) -> str | None:
        if value and not value.startswith("s3://"):
            raise ValueError(f"monitoring.alerts_uri {value!r}: an s3://bucket/prefix or null")
        return value or None

    def enabled_thresholds(self) -> list[str]:
        """The names of the thresholds that are on."""
        named = {
            "max_rss": self.max_rss,
            "max_gpu_memory_fraction": self.max_gpu_memory_fraction,
            "min_throughput_fraction": self.min_throughput_fraction,
            "plateau_evals": self.plateau_evals,
            "min_free_disk": self.min_free_disk,
        }
        on = [name for name, value in named.items() if value is not None]
        if self.nonfinite_loss != "off":
            on.append(f"nonfinite_loss={self.nonfinite_loss}")
        return on


class TrainConfig(Strict):
    """A training run: the experiment (tracking, model, training) plus how to run it."""

    tracking: Tracking = Field(default_factory=Tracking)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    data: DataLoadingConfig = Field(default_factory=DataLoadingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)


def load_train_config(path: Path | str, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training config with ``key=value`` overrides; ``ConfigError`` names a bad key."""
    return load_config(path, TrainConfig, overrides)
