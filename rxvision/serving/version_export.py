"""Exporting a registered version: TorchScript and ONNX checked on real images, INT8
when it keeps its accuracy, the scoring batch size tuned per runtime and device, all
logged with the version.

Tags on the version: ``rxvision.serving.<runtime>.*`` (artifact, parity),
``rxvision.serving.int8.*`` (kept, top-1 fp32 and int8) and
``rxvision.batch_size.<runtime>.<device>`` (``rxvision.serving.batch_tuning``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rxvision.errors import ConfigError
from rxvision.serving.batch_tuning import (
    BatchTuningConfig,
    TuningResult,
    load_tuning_config,
    log_tuning,
    tune_batch_sizes,
)
from rxvision.serving.exports import (
    FILES,
    FP32_TOLERANCE,
    TAG,
    ExportResult,
    ParityReport,
    export_all,
    log_exports,
)
from rxvision.serving.image_folder import load_image_folder
from rxvision.serving.int8_record import MAX_ECE_RISE, MAX_TOP1_DROP_POINTS
from rxvision.serving.model_contract import LoadedModel
from rxvision.serving.model_loading import load_model
from rxvision.serving.predictors import (
    EagerPredictor,
    OnnxPredictor,
    Predictor,
    TorchScriptPredictor,
    autocast_dtype,
)

log = logging.getLogger(__name__)


@dataclass
class ExportSummary:
    """What ``export_version`` exported, checked and logged."""

    label: str
    exports: list[ExportResult]
    int8: Any | None = None  # quantize.Int8Decision
    tags: dict[str, str] = field(default_factory=dict)
    batch_sizes: TuningResult | None = None  # None: not tuned


def export_version(
    uri: str,
    images: torch.Tensor | None = None,
    labels: np.ndarray | None = None,
    *,
    image_folder: Path | None = None,
    calibration_folder: Path | None = None,
    calibration_images: int = 64,
    tolerance: float = FP32_TOLERANCE,
    max_int8_drop_points: float = MAX_TOP1_DROP_POINTS,
    max_int8_ece_rise: float = MAX_ECE_RISE,
    tracking_uri: str | None = None,
    work_dir: Path | None = None,
    tuning: BatchTuningConfig | None = None,
) -> ExportSummary:
    """Export a registered version to TorchScript and ONNX, check parity on real images,
    try static INT8 when labels and calibration images are given, and log it all with
    the version.

    Images come preprocessed (``images``, ``labels``) or from ``image_folder``
    (``DIR/<class>/*``, labelled by folder): held-out images, on which parity is checked
    and INT8 is accepted or refused (``rxvision.serving.quantize.judge_int8``: top-1 at
    most ``max_int8_drop_points`` lower, ECE at most ``max_int8_ece_rise`` higher, no
    more wrong predictions skipping review, under the version's temperature and review
    threshold). INT8 is calibrated on ``calibration_folder``
    (training images), ``calibration_images`` of them taken round-robin across classes;
    without one, INT8 is not tried (calibrating on the images that judge it would hide
    its error).

    Then the scoring batch size is tuned per runtime and device on the same held-out
    images (``rxvision.serving.batch_tuning``; ``tuning``: a ``BatchTuningConfig``,
    default the serving config's ``batch_tuning``); a tuning failure is logged and
    leaves the export as it is.
    """
    from mlflow.tracking import MlflowClient

    from rxvision.serving.quantize import static_int8

    loaded = load_model(uri, tracking_uri=tracking_uri)
    if images is None:
        if image_folder is None:
            raise ConfigError("export needs real images: give images or an image folder")
        images, labels = load_image_folder(image_folder, loaded)
    calibration = None
    if calibration_folder is not None:
        calibration, _ = load_image_folder(calibration_folder, loaded, limit=calibration_images)
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        out_dir = Path(tmp)
        results = export_all(loaded, images, out_dir, tolerance)
        decision = None
        if labels is not None and calibration is not None:
            onnx_path = out_dir / FILES["onnxruntime"]
            int8_path = out_dir / FILES["onnxruntime-int8"]
            decision = static_int8(
                onnx_path,
                calibration,
                images,
                labels,
                int8_path,
                max_drop_points=max_int8_drop_points,
                max_ece_rise=max_int8_ece_rise,
                temperature=loaded.temperature,
                review_threshold=loaded.review_threshold_or_default,
            )
            if decision.kept:
                int8_parity = ParityReport("onnxruntime-int8", len(images), float("nan"), 0.0, 0.0)
                results.append(ExportResult("onnxruntime-int8", int8_path, int8_parity))
        tags = log_exports(client, loaded.ref, results)
        tuned = _tune_batch_sizes(loaded, results, images, client, out_dir, tuning)
        if tuned is not None:
            tags.update(tuned.tags())
    if decision is not None and loaded.ref.registered_name and loaded.ref.version:
        int8_tags = decision.tags(TAG)
        for key, value in int8_tags.items():
            client.set_model_version_tag(loaded.ref.registered_name, loaded.ref.version, key, value)
        tags.update(int8_tags)
    return ExportSummary(loaded.label, results, decision, tags, tuned)


def _tune_batch_sizes(
    loaded: LoadedModel,
    results: Sequence[ExportResult],
    images: torch.Tensor,
    client: Any,
    out_dir: Path,
    tuning: BatchTuningConfig | None,
) -> TuningResult | None:
    """Tune and log the batch size of eager and each export (``batch_tuning``); None
    when tuning is off or failed (logged: an export never fails for it)."""
    try:
        config = tuning or load_tuning_config()
        if not config.enabled:
            log.info(
                "batch tuning is off (batch_tuning.enabled: false): %s not tuned", loaded.label
            )
            return None
        factories: dict[str, Callable[[torch.device], Predictor]] = {
            "eager": lambda d: EagerPredictor(loaded.model, d, autocast_dtype(d))
        }
        for result in results:
            factories[result.runtime] = _factory(result)
        tuned = tune_batch_sizes(factories, images, config)
        log_tuning(client, loaded.ref, tuned, out_dir / "batch_tuning")
        return tuned
    except Exception as exc:  # tuning is an optimisation: the export stands without it
        log.warning(
            "batch tuning of %s failed, no batch size tagged: %s", loaded.label, exc, exc_info=True
        )
        return None


def _factory(result: ExportResult) -> Callable[[torch.device], Predictor]:
    """A predictor of ``result``'s file on a given device."""
    if result.runtime == "torchscript":
        return lambda device: TorchScriptPredictor(result.path, device)
    return lambda device: OnnxPredictor(result.path, device, runtime=result.runtime)
