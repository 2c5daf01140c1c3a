"""Picking the runtime that scores: the first of a preference list that loads and
passes parity with eager (or, with ``probe``, the fastest measured), logged. An
immutable version's file is checked once per host (``rxvision.serving.parity_record``).

An exported runtime uses the version's logged export when it has one, else exports
locally (cached per immutable version).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rxvision.errors import ConfigError
from rxvision.serving.exports import (
    FILES,
    FP32_TOLERANCE,
    TAG,
    ExportParityError,
    check_parity,
    export_onnx,
    export_torchscript,
)
from rxvision.serving.int8_record import int8_judgement
from rxvision.serving.model_contract import LoadedModel
from rxvision.serving.model_loading import cache_key, default_cache_dir
from rxvision.serving.parity_record import passed_parity_before, record_parity
from rxvision.serving.predictors import (
    RUNTIMES,
    EagerPredictor,
    OnnxPredictor,
    Predictor,
    RuntimeUnavailable,
    TorchScriptPredictor,
    autocast_dtype,
    cpu_has_vnni,
)

log = logging.getLogger(__name__)


@dataclass
class PredictorOptions:
    """How ``select_predictor`` builds runtimes."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "auto"
    tolerance: float = FP32_TOLERANCE
    cache_dir: Path = field(default_factory=default_cache_dir)
    probe: bool = False
    tracking_uri: str | None = None


def build_predictor(
    loaded: LoadedModel, runtime: str, sample: torch.Tensor, options: PredictorOptions
) -> Predictor:
    """One runtime for ``loaded``, parity-checked on ``sample`` (exported runtimes)."""
    device = options.device
    if runtime == "eager":
        return EagerPredictor(loaded.model, device, autocast_dtype(device, options.precision))
    if runtime not in FILES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime-int8":
        _require_judged_int8(loaded, device)
    path = _runtime_file(loaded, runtime, options)
    predictor: Predictor
    if runtime == "torchscript":
        predictor = TorchScriptPredictor(path, device)
    else:
        predictor = OnnxPredictor(path, device, runtime=runtime)
    if runtime == "onnxruntime-int8":
        # INT8 was accepted on labelled validation images when exported; here only sanity
        if not np.isfinite(predictor.predict(sample[:2])).all():
            raise ExportParityError(f"{loaded.label}: int8 model gives non-finite logits")
        return predictor
    # an immutable version's file checked on this host before: the eager network (and
    # its unpickling) is not needed
    recordable = loaded.ref.immutable
    if recordable and passed_parity_before(path, predictor.device, options.tolerance):
        log.info("%s %s: parity checked on this host before", loaded.label, runtime)
        return predictor
    report = check_parity(loaded.model, predictor, sample, options.tolerance)
    if not report.passed:
        raise ExportParityError(f"{loaded.label}: {report.describe()}")
    if recordable:
        record_parity(path, predictor.device, report)
    return predictor


def _require_judged_int8(loaded: LoadedModel, device: torch.device) -> None:
    """Refuse INT8 where it was not judged: on another device than the CPU, or for a
    version whose INT8 model was kept on top-1 alone (exported before ``INT8_GATE``)."""
    if device.type != "cpu":
        raise RuntimeUnavailable(f"int8 was judged on the CPU, not on {device}")
    judged = int8_judgement(loaded.ref.tags) or {}
    if judged.get("reduce_range") == "false" and not cpu_has_vnni():
        # full-range weights: ONNX Runtime's u8s8 kernels can saturate without VNNI
        raise RuntimeUnavailable(
            f"{loaded.label}'s int8 model needs a CPU with VNNI (its weights use 8 bits)"
        )
    if not judged.get("scores"):
        raise RuntimeUnavailable(
            f"{loaded.label} has no int8 model judged on calibration and review "
            f"({TAG}.int8.gate: {judged.get('gate') or 'absent'}); "
            "`rxvision model export` judges one"
        )


def _runtime_file(loaded: LoadedModel, runtime: str, options: PredictorOptions) -> Path:
    """The version's logged export if it has one, else a local export (cached per version)."""
    folder = options.cache_dir / cache_key(loaded.ref.cache_id)
    path = folder / FILES[runtime]
    if loaded.ref.immutable and path.is_file():
        return path
    artifact = loaded.ref.tags.get(f"{TAG}.{runtime}.artifact", "")
    if artifact.startswith("runs:/"):
        from mlflow.tracking import MlflowClient

        run_id, _, artifact_path = artifact.removeprefix("runs:/").partition("/")
        client = MlflowClient(options.tracking_uri)
        got = client.download_artifacts(run_id, artifact_path, str(folder / ".dl"))
        Path(got).replace(path)
        return path
    if runtime == "onnxruntime-int8":
        raise RuntimeUnavailable(f"{loaded.label} has no validated int8 export")
    if runtime == "torchscript":
        return export_torchscript(loaded.model, path)
    return export_onnx(loaded.model, path, img_size=loaded.img_size)


def select_predictor(
    loaded: LoadedModel,
    preference: Sequence[str],
    sample: torch.Tensor,
    options: PredictorOptions,
) -> Predictor:
    """The first runtime of ``preference`` that builds and passes parity (with ``probe``:
    the fastest of those on ``sample``); eager is the last resort."""
    candidates: list[Predictor] = []
    for runtime in preference:
        try:
            candidates.append(build_predictor(loaded, runtime, sample, options))
        except RuntimeUnavailable as exc:  # not made for this version or device: expected
            log.info("runtime %s unavailable for %s: %s", runtime, loaded.label, exc)
            continue
        except Exception as exc:  # any failure of one runtime leaves the others
            log.warning("runtime %s failed for %s: %s", runtime, loaded.label, exc)
            continue
        if not options.probe:
            break
    if not candidates:
        log.warning("no preferred runtime works for %s: falling back to eager", loaded.label)
        candidates.append(build_predictor(loaded, "eager", sample, options))
    chosen = _fastest(candidates, sample) if len(candidates) > 1 else candidates[0]
    log.info("scoring %s with %s on %s", loaded.label, chosen.runtime, chosen.device)
    return chosen


def _fastest(candidates: Sequence[Predictor], sample: torch.Tensor) -> Predictor:
    timings = {}
    for predictor in candidates:
        predictor.predict(sample)  # warm-up: first calls allocate and plan
        began = time.perf_counter()
        predictor.predict(sample)
        timings[predictor.runtime] = time.perf_counter() - began
    log.info("runtime probe (s per batch of %d): %s", len(sample), timings)
    return min(candidates, key=lambda p: timings[p.runtime])
