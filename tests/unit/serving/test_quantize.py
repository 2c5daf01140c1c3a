"""Quantization: dynamic on linear layers, static INT8 kept only within its budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from serving_fixtures import IMG, loaded_model

from rxvision.serving.exports import export_onnx
from rxvision.serving.predictors import EagerPredictor
from rxvision.serving.quantize import dynamic_quantize, static_int8

pytestmark = pytest.mark.unit


def test_dynamic_quantization_only_touches_linear_layers() -> None:
    quantized, report = dynamic_quantize(loaded_model().model)
    assert report.quantized_modules == ["head.1"]
    assert report.conv_layers == 1 and report.linear_layers == 1
    assert 0 < report.quantized_fraction < 0.5
    assert "none of 1 Conv layers" in report.describe()
    logits = EagerPredictor(quantized, torch.device("cpu")).predict(torch.zeros(1, 3, IMG, IMG))
    assert logits.shape == (1, 3)


def test_static_int8_is_kept_only_within_the_top1_budget(
    tmp_path: Path, images: torch.Tensor
) -> None:
    loaded = loaded_model()
    onnx_path = export_onnx(loaded.model, tmp_path / "m.onnx", img_size=IMG)
    # labels = fp32 predictions: fp32 top-1 is 1.0 by construction
    labels = EagerPredictor(loaded.model, torch.device("cpu")).predict(images).argmax(1)
    kept = static_int8(
        onnx_path, images, images, labels, tmp_path / "int8.onnx", max_drop_points=100
    )
    assert kept.kept and kept.path is not None and kept.path.is_file()
    assert kept.top1_fp32 == 1.0
    strict = static_int8(
        onnx_path, images, images, labels, tmp_path / "int8b.onnx", max_drop_points=-1
    )
    assert not strict.kept and strict.path is None
    assert not (tmp_path / "int8b.onnx").exists()
    assert "discarded" in strict.describe()
