"""Quantization of the serving model: measured, and kept only when accuracy holds.

- ``dynamic_quantize``: the seed's ``torch.ao.quantization.quantize_dynamic`` on
  ``nn.Linear``. Dynamic quantization covers Linear/RNN layers only, so on a CNN it
  touches the final classifier layer alone; the report says which modules and what
  share of the weights it quantized, so that nobody mistakes it for a CNN speed-up.
- ``static_int8``: static INT8 post-training quantization with ONNX Runtime (QDQ
  format, per-channel weights) calibrated by a ``CalibrationDataReader`` over
  training images. It is judged on held-out images against the fp32 model, under the
  version's own temperature and review threshold, and kept only when all three hold:
  its top-1 is at most ``max_drop_points`` (default 1 point) lower; its calibration
  error (ECE) at most ``max_ece_rise`` (default 0.02) higher, since the temperature was
  fitted on fp32 logits; and no more of its wrong predictions are confident enough to
  skip review than fp32's (a pharmacy trusts an auto-accepted row). Scoring prefers a kept INT8
  model on a CPU (``INT8_GATE``: only a version judged so).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from rxvision.registry.gates import expected_calibration_error
from rxvision.serving.calibration import DEFAULT_REVIEW_THRESHOLD, softmax
from rxvision.serving.int8_record import INT8_GATE, MAX_ECE_RISE, MAX_TOP1_DROP_POINTS
from rxvision.serving.model_contract import ServingModel
from rxvision.serving.predictors import OnnxPredictor, Predictor, cpu_has_vnni

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class DynamicQuantReport:
    """Which modules dynamic quantization replaced, and what share of the weights."""

    quantized_modules: list[str]
    linear_layers: int
    conv_layers: int
    quantized_params: int
    total_params: int

    @property
    def quantized_fraction(self) -> float:
        """Share of the float model's parameters that became INT8."""
        return self.quantized_params / self.total_params if self.total_params else 0.0

    def describe(self) -> str:
        """One line for logs and benchmark reports."""
        return (
            f"dynamic quantization replaced {len(self.quantized_modules)} of "
            f"{self.linear_layers} Linear layers ({', '.join(self.quantized_modules) or 'none'}) "
            f"and none of {self.conv_layers} Conv layers: "
            f"{self.quantized_fraction:.2%} of the parameters"
        )


def dynamic_quantize(model: ServingModel) -> tuple[nn.Module, DynamicQuantReport]:
    """The seed's dynamic INT8 quantization (Linear layers), on a copy; CPU only."""
    source = copy.deepcopy(model).cpu().eval()
    linears = {n: m for n, m in source.named_modules() if isinstance(m, nn.Linear)}
    convs = sum(1 for m in source.modules() if isinstance(m, nn.Conv2d))
    total = sum(p.numel() for p in source.parameters())
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated for torchao (not a dependency); the seed's
        # API is measured as it is
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(source, {nn.Linear}, dtype=torch.qint8)
    replaced = [
        name
        for name, module in quantized.named_modules()
        if name in linears and not isinstance(module, nn.Linear)
    ]
    params = sum(p.numel() for n in replaced for p in linears[n].parameters())
    report = DynamicQuantReport(replaced, len(linears), convs, params, total)
    log.info("%s", report.describe())
    return quantized, report


class BatchCalibrationReader(CalibrationDataReader):
    """Feeds calibration batches (NCHW float32 arrays) to ONNX Runtime's calibrator."""

    def __init__(self, batches: Iterable[np.ndarray], input_name: str = "images") -> None:
        self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
        self.input_name = input_name
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or None when all were read."""
        if self.position >= len(self.batches):
            return None
        batch = self.batches[self.position]
        self.position += 1
        return {self.input_name: batch}

    def rewind(self) -> None:
        """Start again from the first batch."""
        self.position = 0


def static_quantize_onnx(
    onnx_path: Path,
    calibration: Sequence[np.ndarray],
    out_path: Path,
    *,
    per_channel: bool = True,
    reduce_range: bool | None = None,
) -> Path:
    """Static INT8 (QDQ) of an fp32 ONNX model, calibrated (min-max) on ``calibration``.

    ``reduce_range`` (7-bit weights) defaults to on for x86 CPUs without VNNI, where
    ONNX Runtime's u8s8 kernels can saturate 16-bit intermediate sums.
    """
    reduce = (not cpu_has_vnni()) if reduce_range is None else reduce_range
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference and graph fusions first, as ONNX Runtime recommends for QDQ
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            BatchCalibrationReader(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return out_path


def logits_of(predictor: Predictor, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """``predictor``'s logits for ``images``, in batches of ``batch_size``."""
    if len(images) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    parts = [
        predictor.predict(images[start : start + batch_size])
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts)


def top1_accuracy(
    predictor: Predictor, images: torch.Tensor, labels: np.ndarray, batch_size: int = 32
) -> float:
    """Share of ``images`` whose argmax logit is the label."""
    if len(images) == 0:
        return 0.0
    return float((logits_of(predictor, images, batch_size).argmax(1) == labels).mean())


@dataclass(frozen=True)
class HeldOutScore:
    """One runtime on labelled held-out images, under the version's temperature and
    review threshold."""

    top1: float
    ece: float
    # wrong predictions confident enough to skip the review queue
    silent_errors: int
    predicted: np.ndarray  # the predicted class of each image
    routed: np.ndarray  # whether each image goes to review

    @classmethod
    def of(
        cls, logits: np.ndarray, labels: np.ndarray, temperature: float, threshold: float
    ) -> HeldOutScore:
        """The score of ``logits`` against the true ``labels``."""
        probs = softmax(logits, temperature)
        predicted = probs.argmax(axis=1)
        confidence = probs.max(axis=1)
        correct = predicted == labels
        routed = confidence < threshold
        return cls(
            top1=float(correct.mean()) if len(labels) else 0.0,
            ece=expected_calibration_error(confidence, correct) if len(labels) else 0.0,
            silent_errors=int((~correct & ~routed).sum()),
            predicted=predicted,
            routed=routed,
        )


@dataclass(frozen=True)
class Int8Decision:
    """Whether the static INT8 model is kept, and the held-out figures that decided it."""

    kept: bool
    top1_fp32: float
    top1_int8: float
    max_drop_points: float
    path: Path | None
    ece_fp32: float = 0.0
    ece_int8: float = 0.0
    max_ece_rise: float = MAX_ECE_RISE
    silent_errors_fp32: int = 0
    silent_errors_int8: int = 0
    # share of images given the same label and the same route (review or not) as fp32
    agreement: float = 1.0
    refused: tuple[str, ...] = ()  # each failed check, in words
    # 7-bit weights (made on a CPU without VNNI): safe on any x86 CPU; full range needs VNNI
    reduce_range: bool = False

    @property
    def drop_points(self) -> float:
        """Top-1 lost, in percentage points (negative: INT8 did better)."""
        return (self.top1_fp32 - self.top1_int8) * 100

    def describe(self) -> str:
        """One line for logs."""
        verdict = "kept" if self.kept else "discarded: " + "; ".join(self.refused)
        return (
            f"static int8: top-1 {self.top1_int8:.4f} vs fp32 {self.top1_fp32:.4f} "
            f"({self.drop_points:+.2f} points lost, limit {self.max_drop_points}), "
            f"ECE {self.ece_int8:.4f} vs {self.ece_fp32:.4f} (limit +{self.max_ece_rise}), "
            f"wrong without review {self.silent_errors_int8} vs {self.silent_errors_fp32}, "
            f"same label and route {self.agreement:.1%}: {verdict}"
        )

    def tags(self, prefix: str) -> dict[str, str]:
        """The version tags that record this decision (``prefix``: ``rxvision.serving``)."""
        tags = {
            f"{prefix}.int8.kept": str(self.kept).lower(),
            f"{prefix}.int8.top1_fp32": f"{self.top1_fp32:.4f}",
            f"{prefix}.int8.top1_int8": f"{self.top1_int8:.4f}",
            f"{prefix}.int8.ece_fp32": f"{self.ece_fp32:.4f}",
            f"{prefix}.int8.ece_int8": f"{self.ece_int8:.4f}",
            f"{prefix}.int8.silent_errors_fp32": str(self.silent_errors_fp32),
            f"{prefix}.int8.silent_errors_int8": str(self.silent_errors_int8),
            f"{prefix}.int8.agreement": f"{self.agreement:.4f}",
            f"{prefix}.int8.reduce_range": str(self.reduce_range).lower(),
        }
        if self.kept:
            tags[f"{prefix}.int8.gate"] = INT8_GATE
        else:
            tags[f"{prefix}.int8.refused"] = "; ".join(self.refused)
        return tags


def judge_int8(
    fp32: HeldOutScore,
    int8: HeldOutScore,
    *,
    max_drop_points: float = MAX_TOP1_DROP_POINTS,
    max_ece_rise: float = MAX_ECE_RISE,
) -> tuple[str, ...]:
    """The checks INT8 fails against fp32 on the same images (empty: keep it)."""
    refused = []
    drop = (fp32.top1 - int8.top1) * 100
    if drop > max_drop_points:
        refused.append(f"top-1 {drop:.2f} points lower (limit {max_drop_points})")
    if int8.ece - fp32.ece > max_ece_rise:
        refused.append(f"ECE {int8.ece - fp32.ece:+.4f} (limit +{max_ece_rise})")
    if int8.silent_errors > fp32.silent_errors:
        refused.append(
            f"{int8.silent_errors} wrong predictions skip review against {fp32.silent_errors}"
        )
    return tuple(refused)


def static_int8(
    onnx_path: Path,
    calibration: torch.Tensor,
    images: torch.Tensor,
    labels: np.ndarray,
    out_path: Path,
    *,
    max_drop_points: float = MAX_TOP1_DROP_POINTS,
    max_ece_rise: float = MAX_ECE_RISE,
    temperature: float = 1.0,
    review_threshold: float = DEFAULT_REVIEW_THRESHOLD,
) -> Int8Decision:
    """Quantize ``onnx_path`` calibrated on ``calibration`` (training images across every
    class); keep it only when it holds against fp32 on the held-out ``images`` (top-1,
    ECE and the review queue under ``temperature`` and ``review_threshold``: ``judge_int8``)."""
    calib = calibration.numpy()
    batches = [calib[i : i + CALIBRATION_BATCH] for i in range(0, len(calib), CALIBRATION_BATCH)]
    reduce_range = not cpu_has_vnni()
    static_quantize_onnx(onnx_path, batches, out_path, reduce_range=reduce_range)
    cpu = torch.device("cpu")
    labels = np.asarray(labels)
    fp32, int8 = (
        HeldOutScore.of(logits_of(predictor, images), labels, temperature, review_threshold)
        for predictor in (
            OnnxPredictor(onnx_path, cpu),
            OnnxPredictor(out_path, cpu, runtime="onnxruntime-int8"),
        )
    )
    refused = judge_int8(fp32, int8, max_drop_points=max_drop_points, max_ece_rise=max_ece_rise)
    kept = not refused
    if not kept:
        out_path.unlink(missing_ok=True)
    same = (fp32.predicted == int8.predicted) & (fp32.routed == int8.routed)
    decision = Int8Decision(
        kept,
        fp32.top1,
        int8.top1,
        max_drop_points,
        out_path if kept else None,
        ece_fp32=fp32.ece,
        ece_int8=int8.ece,
        max_ece_rise=max_ece_rise,
        silent_errors_fp32=fp32.silent_errors,
        silent_errors_int8=int8.silent_errors,
        agreement=float(same.mean()) if len(same) else 1.0,
        refused=refused,
        reduce_range=reduce_range,
    )
    log.info("%s", decision.describe())
    return decision
