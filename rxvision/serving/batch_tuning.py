"""Batch-size tuning: the fastest scoring batch size of a model version, per runtime and
device, measured at export and used by scoring.

``tune_batch_sizes`` times each runtime (eager, TorchScript, ONNX Runtime: those
exported) on each device (CPU, plus CUDA when present) over candidate batch sizes, on
real held-out images already preprocessed: ``warmup_batches`` untimed calls, then
batches until ``images_per_candidate`` images have been scored (or
``max_seconds_per_candidate`` have passed: a slow size costs no more). Only the model call is
timed, as scoring's batch latency is. The best size of a runtime and device is the
fastest (``within: 0``, the default), or the smallest whose throughput is within
``within`` of the fastest, for a host that would rather spend less memory and latency.
The fastest by default because the scoring job pays per batch for more than the model
call (gathering a batch from its decode workers, dispatch, rows): on the job's INT8 model
(BENCHMARKS.md, the twenty-ninth session) batch 8 was the job's slowest size of
8/16/32/64 in every run, 5-10% below the best, while the model call alone put it within
5% of the fastest, so "the smallest within 5%" chose it in some exports; the fastest
never did.

``log_tuning`` stores the best sizes as model-version tags
``rxvision.batch_size.<runtime>.<device>`` (e.g. ``rxvision.batch_size.onnxruntime.cpu``)
and the whole table as ``serving/batch_tuning/batch_sizes.json`` (plus a PNG plot) in
the version's run. ``choose_batch_size`` is scoring's rule: the serving config's (or
command line's) ``batch_size`` when set, else the version's tag for the runtime and
device that scores, else ``DEFAULT_BATCH_SIZE``.

A runtime that cannot run at a size (out of memory, a provider error) is skipped for
that size with a log line; tuning never fails an export.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger(__name__)

TAG_PREFIX = "rxvision.batch_size"
ARTIFACT_DIR = "serving/batch_tuning"
TABLE_FILE = "batch_sizes.json"
PLOT_FILE = "batch_sizes.png"
DEFAULT_BATCH_SIZE = 32
DEFAULT_CANDIDATES = (1, 8, 16, 32, 64)


class BatchTuningConfig(BaseModel):
    """``batch_tuning`` of ``configs/serving.yaml``: what ``export_version`` measures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    candidates: list[int] = Field(default_factory=lambda: list(DEFAULT_CANDIDATES), min_length=1)
    warmup_batches: int = Field(1, ge=0)
    images_per_candidate: int = Field(128, ge=1)
    # a slow runtime at a small size stops timing after this, once a batch is timed: an
    # export's tuning costs at most runtimes x devices x candidates x this (plus warm-up)
    max_seconds_per_candidate: float = Field(2.0, gt=0)
    # 0: the fastest size; else the smallest within this share of the fastest
    within: float = Field(0.0, ge=0, lt=1)
    # null: CPU, plus CUDA when this machine has it
    devices: list[Literal["cpu", "cuda"]] | None = None

    @field_validator("candidates")
    @classmethod
    def _positive_and_sorted(cls, value: list[int]) -> list[int]:
        if any(size < 1 for size in value):
            raise ValueError(f"batch sizes must be >= 1, got {value}")
        return sorted(set(value))


@dataclass(frozen=True)
class Measurement:
    """One runtime, device and batch size: its throughput, or why it did not run."""

    runtime: str
    device: str
    batch_size: int
    images_per_s: float | None
    error: str | None = None


@dataclass
class TuningResult:
    """The table and the best size of each (runtime, device) that ran."""

    measurements: list[Measurement] = field(default_factory=list)
    best: dict[tuple[str, str], int] = field(default_factory=dict)
    config: BatchTuningConfig = field(default_factory=BatchTuningConfig)

    def tags(self) -> dict[str, str]:
        """The model-version tags: ``rxvision.batch_size.<runtime>.<device>``."""
        return {
            tag_key(runtime, device): str(size) for (runtime, device), size in self.best.items()
        }

    def to_json(self) -> dict[str, Any]:
        """The artifact: settings, every measurement, and the best sizes."""
        return {
            "config": self.config.model_dump(),
            "measurements": [asdict(m) for m in self.measurements],
            "best": [
                {"runtime": runtime, "device": device, "batch_size": size}
                for (runtime, device), size in sorted(self.best.items())
            ],
        }


def device_type(device: str | torch.device) -> str:
    """``cuda:0`` -> ``cuda``: tags are per kind of device, not per index."""
    return torch.device(device).type


def tag_key(runtime: str, device: str | torch.device) -> str:
    """``rxvision.batch_size.<runtime>.<device type>``."""
    return f"{TAG_PREFIX}.{runtime}.{device_type(device)}"


def tuning_devices(config: BatchTuningConfig) -> list[torch.device]:
    """The configured devices, else CPU plus CUDA when present (an unavailable CUDA is
    left out with a log line: an export on a CPU machine still tunes its CPU)."""
    wanted = config.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    devices = []
    for name in wanted:
        if name == "cuda" and not torch.cuda.is_available():
            log.warning("batch tuning: CUDA is not available here; cuda not tuned")
            continue
        devices.append(torch.device(name))
    return devices


def _batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """``size`` images, cycling through ``images`` when there are fewer."""
    if len(images) >= size:
        return images[:size]
    repeats = math.ceil(size / len(images))
    return images.repeat(repeats, 1, 1, 1)[:size]


def measure(predictor: Any, images: torch.Tensor, size: int, config: BatchTuningConfig) -> float:
    """Images per second of ``predictor`` at batch ``size`` (the model call alone)."""
    batch = _batch(images, size)
    if batch.device.type == "cpu" and str(predictor.device).startswith("cuda"):
        batch = batch.pin_memory()  # as scoring's loader hands batches to a GPU
    for _ in range(config.warmup_batches):
        predictor.predict(batch)  # first calls allocate, plan and pick kernels
    calls = max(1, math.ceil(config.images_per_candidate / size))
    began = time.perf_counter()
    done = 0
    while done < calls:
        predictor.predict(batch)  # returns numpy: the device has finished
        done += 1
        if time.perf_counter() - began > config.max_seconds_per_candidate:
            break
    return done * size / (time.perf_counter() - began)


def best_size(rows: Sequence[Measurement], within: float) -> int | None:
    """The smallest size within ``within`` of the fastest (None: none ran)."""
    ran = [m for m in rows if m.images_per_s is not None]
    if not ran:
        return None
    fastest = max(float(m.images_per_s or 0.0) for m in ran)
    good = [m.batch_size for m in ran if float(m.images_per_s or 0.0) >= fastest * (1 - within)]
    return min(good)


PredictorFactory = Callable[[torch.device], Any]


def tune_batch_sizes(
    factories: Mapping[str, PredictorFactory],
    images: torch.Tensor,
    config: BatchTuningConfig,
    devices: Sequence[torch.device] | None = None,
) -> TuningResult:
    """Measure each runtime of ``factories`` (runtime -> device -> predictor) on each
    device over ``config.candidates``; a runtime that does not build on a device, or
    fails at a size, is skipped there with a log line."""
    result = TuningResult(config=config)
    for device in devices if devices is not None else tuning_devices(config):
        kind = device_type(device)
        for runtime, factory in factories.items():
            try:
                predictor = factory(device)
            except Exception as exc:  # one runtime's failure leaves the others
                log.warning("batch tuning: %s on %s unavailable, skipped: %s", runtime, kind, exc)
                continue
            rows = [
                _measure_one(predictor, runtime, kind, size, images, config)
                for size in config.candidates
            ]
            result.measurements.extend(rows)
            best = best_size(rows, config.within)
            if best is not None:
                result.best[(runtime, kind)] = best
                log.info(
                    "batch tuning: %s on %s: best batch size %d (%s)",
                    runtime,
                    kind,
                    best,
                    ", ".join(_describe(m) for m in rows),
                )
            del predictor
            if kind == "cuda":
                torch.cuda.empty_cache()
    return result


def _measure_one(
    predictor: Any,
    runtime: str,
    kind: str,
    size: int,
    images: torch.Tensor,
    config: BatchTuningConfig,
) -> Measurement:
    try:
        speed = measure(predictor, images, size, config)
    except Exception as exc:  # out of memory or a provider limit: this size is skipped
        log.warning(
            "batch tuning: %s on %s failed at batch size %d, skipped: %s", runtime, kind, size, exc
        )
        if kind == "cuda":
            torch.cuda.empty_cache()
        return Measurement(runtime, kind, size, None, f"{type(exc).__name__}: {exc}"[:300])
    return Measurement(runtime, kind, size, round(speed, 2))


def _describe(m: Measurement) -> str:
    return (
        f"{m.batch_size}: {m.images_per_s:.1f}/s" if m.images_per_s else f"{m.batch_size}: failed"
    )


def write_plot(result: TuningResult, path: Path) -> Path | None:
    """Images/s against batch size, one line per runtime and device (None: no plot)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the table is the artifact; the plot is a convenience
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for runtime, kind in sorted({(m.runtime, m.device) for m in result.measurements}):
        rows = [
            m
            for m in result.measurements
            if (m.runtime, m.device) == (runtime, kind) and m.images_per_s
        ]
        if rows:
            ax.plot(
                [m.batch_size for m in rows],
                [float(m.images_per_s or 0.0) for m in rows],
                marker="o",
                label=f"{runtime} ({kind})",
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.set_title("Scoring throughput by batch size")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def log_tuning(client: Any, ref: Any, result: TuningResult, work_dir: Path) -> dict[str, str]:
    """Upload the table (and plot) under ``serving/batch_tuning/`` of the version's run;
    tag the version with the best size per runtime and device. Returns the tags set."""
    if ref.run_id is None:
        log.warning("batch tuning: %s has no run to log the table into", ref.uri)
        return {}
    work_dir.mkdir(parents=True, exist_ok=True)
    table = work_dir / TABLE_FILE
    table.write_text(json.dumps(result.to_json(), indent=2))
    client.log_artifact(ref.run_id, str(table), ARTIFACT_DIR)
    plot = write_plot(result, work_dir / PLOT_FILE)
    if plot is not None:
        client.log_artifact(ref.run_id, str(plot), ARTIFACT_DIR)
    tags = result.tags()
    if ref.registered_name and ref.version:
        for key, value in tags.items():
            client.set_model_version_tag(ref.registered_name, ref.version, key, value)
    return tags


def load_tuning_config(path: Path | str | None = None) -> BatchTuningConfig:
    """``batch_tuning`` of the serving config (``configs/serving.yaml`` by default)."""
    # scoring_config imports this module (BatchTuningConfig)
    from rxvision.serving.scoring_config import load_scoring_config

    return load_scoring_config(path).batch_tuning


# --- scoring's choice ----------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSizeChoice:
    """The batch size scoring uses and why (``source``: config, tuned or default)."""

    size: int
    source: Literal["config", "tuned", "default"]
    reason: str


def choose_batch_size(
    configured: int | None,
    tags: Mapping[str, str],
    runtime: str,
    device: str | torch.device,
    default: int = DEFAULT_BATCH_SIZE,
) -> BatchSizeChoice:
    """The configured size when set (the serving config or the command line), else the
    version's tuned size for ``runtime`` on ``device``, else ``default``."""
    key = tag_key(runtime, device)
    tuned = _positive_int(tags.get(key))
    if configured is not None:
        note = f" (the tuned size {tuned} of {key} is overridden)" if tuned else ""
        return BatchSizeChoice(configured, "config", f"batch_size={configured} is configured{note}")
    if tuned is not None:
        return BatchSizeChoice(tuned, "tuned", f"tuned at export: {key}={tuned}")
    return BatchSizeChoice(
        default, "default", f"no {key} tag on the version: the default {default}"
    )


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and value >= 1 else None
