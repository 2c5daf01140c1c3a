"""Exports of the serving model (TorchScript, ONNX) and their parity with eager.

TorchScript is scripted and frozen (TorchScript is in maintenance in PyTorch 2.x but
kept, as the seed asks); ONNX is for ONNX Runtime. Each export is checked against eager
on real images: the largest absolute difference of the logits must stay within a
stated tolerance (1e-3 in fp32), else ``ExportParityError``. ``log_exports`` logs the
files with the registered version: artifacts under ``serving/`` of its run, and tags
``rxvision.serving.<runtime>.*`` on the version.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rxvision.errors import ConfigError, RxVisionError
from rxvision.serving.model_contract import LoadedModel, ModelRef, ServingModel
from rxvision.serving.predictors import (
    OnnxPredictor,
    Predictor,
    TorchScriptPredictor,
    quiet_export_warnings,
)

log = logging.getLogger(__name__)


FP32_TOLERANCE = 1e-3
ONNX_OPSET = 17
FILES = {
    "torchscript": "model.torchscript.pt",
    "onnxruntime": "model.onnx",
    "onnxruntime-int8": "model.int8.onnx",
}
ARTIFACT_DIR = "serving"
TAG = "rxvision.serving"


class ExportParityError(RxVisionError):
    """An exported model's outputs differ from eager's by more than the tolerance."""

    exit_code = 8


class _Exported(nn.Module):
    """Tuple outputs for ONNX, which has no dict outputs."""

    def __init__(self, model: ServingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x, return_features=True)
        return out["logits"], out["features"]


def _atomic_target(path: Path) -> Path:
    """A temporary name next to ``path``: an export is renamed over it once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def export_torchscript(model: ServingModel, path: Path) -> Path:
    """Script (the dict contract survives) and freeze; trace when scripting fails."""
    model = model.eval()
    tmp = _atomic_target(path)
    with quiet_export_warnings():
        try:
            module: Any = torch.jit.freeze(torch.jit.script(model))
        except Exception as exc:  # a custom backbone TorchScript cannot compile
            log.warning("torch.jit.script failed (%s); tracing instead", exc, exc_info=True)
            example = torch.zeros(1, 3, 64, 64)
            module = torch.jit.freeze(torch.jit.trace(_Exported(model), example).eval())
        torch.jit.save(module, str(tmp))
    tmp.replace(path)
    return path


def export_onnx(model: ServingModel, path: Path, *, img_size: int, opset: int = ONNX_OPSET) -> Path:
    """ONNX with a dynamic batch axis; outputs ``logits`` and ``features``.

    The TorchScript-based exporter (``dynamo=False``): the torch.export-based one needs
    ``onnxscript``, which is not installed, and handles these CNNs no better.
    """
    tmp = _atomic_target(path)
    example = torch.zeros(1, 3, img_size, img_size)
    with quiet_export_warnings(), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            _Exported(model.eval()),
            (example,),
            str(tmp),
            dynamo=False,
            input_names=["images"],
            output_names=["logits", "features"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
            opset_version=opset,
        )
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class ParityReport:
    """How far a runtime's logits are from eager's on the same images."""

    runtime: str
    images: int
    max_abs_diff: float
    tolerance: float
    top1_agreement: float

    @property
    def passed(self) -> bool:
        """Within tolerance (and finite: NaN never passes)."""
        return bool(np.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance)

    def describe(self) -> str:
        """One line for logs and errors."""
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.runtime} parity on {self.images} images: max |logit diff| "
            f"{self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}), top-1 agreement "
            f"{self.top1_agreement:.3f}: {verdict}"
        )


def check_parity(
    reference: ServingModel, predictor: Predictor, images: torch.Tensor, tolerance: float
) -> ParityReport:
    """Compare ``predictor`` with eager fp32 on CPU on ``images`` (real images, not noise:
    activations of real inputs are what the export has to get right)."""
    with torch.inference_mode():
        expected = reference.eval()(images.cpu())["logits"].float().numpy()
    got = predictor.predict(images)
    diff = float(np.max(np.abs(expected - got))) if expected.size else 0.0
    agree = float(np.mean(expected.argmax(1) == got.argmax(1))) if expected.size else 1.0
    return ParityReport(predictor.runtime, len(images), diff, tolerance, agree)


@dataclass(frozen=True)
class ExportResult:
    """One export: the file and its parity with eager."""

    runtime: str
    path: Path
    parity: ParityReport


def export_all(
    loaded: LoadedModel, images: torch.Tensor, out_dir: Path, tolerance: float = FP32_TOLERANCE
) -> list[ExportResult]:
    """Export to TorchScript and ONNX and check each on ``images``; ``ExportParityError``
    names the runtime that drifted."""
    cpu = torch.device("cpu")
    results = []
    exports = (
        ("torchscript", export_torchscript, TorchScriptPredictor),
        ("onnxruntime", lambda m, p: export_onnx(m, p, img_size=loaded.img_size), OnnxPredictor),
    )
    for runtime, export, predictor_cls in exports:
        path = export(loaded.model, out_dir / FILES[runtime])
        report = check_parity(loaded.model, predictor_cls(path, cpu), images, tolerance)
        log.info("%s", report.describe())
        if not report.passed:
            raise ExportParityError(f"{loaded.label}: {report.describe()}")
        results.append(ExportResult(runtime, path, report))
    return results


def log_exports(client: Any, ref: ModelRef, results: Sequence[ExportResult]) -> dict[str, str]:
    """Upload exports under ``serving/`` of the version's run; tag the version with each
    artifact URI and parity figure. Returns the tags set."""
    if ref.run_id is None:
        raise ConfigError(f"{ref.uri} has no run to log exports into")
    tags: dict[str, str] = {}
    for result in results:
        client.log_artifact(ref.run_id, str(result.path), ARTIFACT_DIR)
        prefix = f"{TAG}.{result.runtime}"
        tags[f"{prefix}.artifact"] = f"runs:/{ref.run_id}/{ARTIFACT_DIR}/{result.path.name}"
        if np.isfinite(result.parity.max_abs_diff):  # int8 is judged on top-1 instead
            tags[f"{prefix}.max_abs_diff"] = f"{result.parity.max_abs_diff:.3e}"
            tags[f"{prefix}.tolerance"] = f"{result.parity.tolerance:.0e}"
            tags[f"{prefix}.parity_images"] = str(result.parity.images)
    if ref.registered_name and ref.version:
        for key, value in tags.items():
            client.set_model_version_tag(ref.registered_name, ref.version, key, value)
    return tags
