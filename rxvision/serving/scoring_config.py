"""The batch scorer's configuration (``configs/serving.yaml``): models, shards, runtimes,
limits, the circuit breaker, the inference cache, batch tuning and where metrics go."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rxvision.config.load import load_config, validate_config
from rxvision.home import repo_root
from rxvision.serving.batch_tuning import BatchTuningConfig
from rxvision.serving.cache import CacheConfig
from rxvision.serving.circuit import CircuitConfig
from rxvision.serving.exports import FP32_TOLERANCE
from rxvision.serving.image_folder import IMAGE_SUFFIXES
from rxvision.serving.metrics import StatsdSink

DEFAULT_CONFIG = repo_root() / "configs" / "serving.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatsdSettings(_Strict):
    """Where metrics go; ``null`` host or port: ``STATSD_HOST``/``STATSD_PORT``."""

    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    prefix: str = "rxvision.scoring"

    def sink(self) -> StatsdSink:
        """The statsd sink these settings name."""
        return StatsdSink(self.host, self.port, self.prefix)


Runtime = Literal["onnxruntime-int8", "onnxruntime", "torchscript", "eager"]


def _default_runtimes() -> list[Runtime]:
    # INT8 first: used only on a CPU, for a version whose INT8 model held top-1,
    # calibration and the review queue against fp32 (rxvision.serving.quantize)
    return ["onnxruntime-int8", "onnxruntime", "torchscript", "eager"]


class ScoringConfig(_Strict):
    """The batch scorer (``configs/serving.yaml``)."""

    model_uri: str = "models:/rxvision-pill-classifier@champion"
    fallback_uri: str | None = None  # null: models:/<name>@<fallback_alias> of the primary
    fallback_alias: str = "fallback"
    tracking_uri: str | None = None
    shard_size: int = Field(2500, ge=1)
    # at most this many shards per run (each a mapped Airflow task: Airflow refuses to
    # map more than max_map_length, 1,024 by default); a larger input gets larger shards
    max_shards: int = Field(512, ge=1)
    # null: the size tuned at export for the runtime and device that score (a version
    # tag, rxvision.serving.batch_tuning), else 32; a number overrides the tuned size
    batch_size: int | None = Field(None, ge=1)
    download_workers: int = Field(8, ge=1, le=256)
    # compute threads of the model runtime (PyTorch, ONNX Runtime). null: every usable
    # core for `rxvision score`; in a scoring task, the cores divided by its worker's
    # task slots (rxvision.cpu_budget)
    cpu_threads: int | None = Field(None, ge=1, le=1024)
    max_in_flight: int = Field(64, ge=1)
    # processes that decode the downloaded images (a crash or hang costs one row:
    # decoder_crash, decode_timeout). null: as many as the model runtime's threads; 0:
    # decode in the download threads, without isolation
    decode_workers: int | None = Field(None, ge=0, le=256)
    decode_timeout_s: float = Field(30.0, gt=0)
    top_k: int = Field(5, ge=1)
    # test-time augmentation: average the calibrated probabilities of the image turned by
    # 0, 90, 180 and 270 degrees (4), or score it once (1); costs that many model calls
    tta_rotations: Literal[1, 2, 4] = 1
    # null: the model's own (chosen for a precision on its validation split)
    review_threshold: float | None = Field(None, ge=0, le=1)
    runtimes: list[Runtime] = Field(default_factory=_default_runtimes)
    probe_runtimes: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    parity_tolerance: float = Field(FP32_TOLERANCE, gt=0)
    suffixes: list[str] = Field(default_factory=lambda: list(IMAGE_SUFFIXES))
    max_image_bytes: int = Field(64 * 1024 * 1024, ge=1)
    max_pixels: int = Field(50_000_000, ge=1)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    batch_tuning: BatchTuningConfig = Field(default_factory=BatchTuningConfig)
    statsd: StatsdSettings = Field(default_factory=StatsdSettings)

    @property
    def possible_runtimes(self) -> frozenset[str]:
        """Every runtime a run may score with: the preference list, and eager, the last
        resort when none of it works (``select_predictor``)."""
        return frozenset([*self.runtimes, "eager"])


def load_scoring_config(
    path: Path | str | None = None, overrides: list[str] | None = None
) -> ScoringConfig:
    """``configs/serving.yaml`` (or ``path``) with overrides; defaults without a file."""
    if path is None and not DEFAULT_CONFIG.is_file():
        return validate_config({}, ScoringConfig, overrides, source="serving defaults")
    return load_config(path or DEFAULT_CONFIG, ScoringConfig, overrides)
