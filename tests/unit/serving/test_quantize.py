"""Quantization: dynamic on linear layers, static INT8 kept only within its budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from serving_fixtures import IMG, loaded_model

from rxvision.serving.exports import export_onnx
from rxvision.serving.int8_record import INT8_GATE
from rxvision.serving.predictors import EagerPredictor, cpu_has_vnni
from rxvision.serving.quantize import (
    HeldOutScore,
    dynamic_quantize,
    judge_int8,
    static_int8,
)

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
    assert "discarded: top-1 " in strict.describe()
    # the decision is recorded whole; only a kept model carries the gate it passed
    assert kept.tags("p")["p.int8.gate"] == INT8_GATE
    assert kept.tags("p")["p.int8.silent_errors_fp32"] == "0"  # fp32 is right everywhere
    assert "p.int8.gate" not in strict.tags("p") and strict.tags("p")["p.int8.kept"] == "false"
    assert 0.0 <= kept.agreement <= 1.0 and 0.0 <= kept.ece_int8 <= 1.0
    # whether the weights were made for any x86 CPU (7 bits) or for VNNI ones (8)
    assert kept.tags("p")["p.int8.reduce_range"] == str(not cpu_has_vnni()).lower()


# three images of three classes, the true class 0, 1, 2
LABELS = np.array([0, 1, 2])


def score(logits: list[list[float]], threshold: float = 0.6) -> HeldOutScore:
    return HeldOutScore.of(np.array(logits), LABELS, temperature=1.0, threshold=threshold)


def test_a_held_out_score_counts_the_wrong_predictions_that_skip_review() -> None:
    # right and sure; wrong and sure (0.84 >= 0.6: skips review); wrong and unsure
    held = score([[4.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.2, 0.0, 0.1]])
    assert held.top1 == pytest.approx(1 / 3)
    assert held.silent_errors == 1
    assert held.routed.tolist() == [False, False, True]
    assert held.predicted.tolist() == [0, 0, 0]
    # the same logits under a higher threshold: the sure mistake goes to review too
    assert score([[4.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.2, 0.0, 0.1]], 0.9).silent_errors == 0


def test_int8_is_refused_naming_each_check_it_fails() -> None:
    fp32 = score([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.3, 0.0, 0.2]])
    assert judge_int8(fp32, fp32) == ()
    # the same labels and routes, every confidence lower: calibration worse by ~0.2
    flat = score([[1.5, 0.0, 0.0], [0.0, 1.5, 0.0], [0.3, 0.0, 0.2]])
    (ece,) = judge_int8(fp32, flat)
    assert ece.startswith("ECE +0.") and "(limit +0.02)" in ece
    # the unsure mistake made sure: one more wrong row accepted without review
    sure = score([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [3.0, 0.0, 0.0]])
    refused = judge_int8(fp32, sure, max_ece_rise=1.0)
    assert refused == ("1 wrong predictions skip review against 0",)
    # a right row made wrong: top-1 33 points lower
    worse = score([[4.0, 0.0, 0.0], [0.0, 0.0, 0.3], [0.3, 0.0, 0.2]])
    assert judge_int8(fp32, worse, max_ece_rise=1.0)[0].startswith("top-1 33.33 points lower")
