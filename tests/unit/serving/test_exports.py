"""The exports (TorchScript, ONNX) and their parity with eager."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from serving_fixtures import IMG, loaded_model, tiny_net

from rxvision.cpu_budget import limit_compute_threads
from rxvision.serving.exports import (
    FP32_TOLERANCE,
    check_parity,
    export_all,
    export_onnx,
    export_torchscript,
)
from rxvision.serving.model_contract import serving_model
from rxvision.serving.predictors import OnnxPredictor

pytestmark = pytest.mark.unit


def test_exports_match_eager_within_tolerance(tmp_path: Path, images: torch.Tensor) -> None:
    results = export_all(loaded_model(), images, tmp_path)
    assert [r.runtime for r in results] == ["torchscript", "onnxruntime"]
    for result in results:
        assert result.path.is_file()
        assert result.parity.passed and result.parity.max_abs_diff <= FP32_TOLERANCE
        assert result.parity.images == len(images) == 12
        assert result.parity.top1_agreement == 1.0


def test_torchscript_keeps_the_dict_contract(tmp_path: Path) -> None:
    model = serving_model(tiny_net())
    path = export_torchscript(model, tmp_path / "m.pt")
    scripted = torch.jit.load(str(path))
    out = scripted(torch.zeros(1, 3, IMG, IMG), True)
    assert set(out) == {"logits", "features"}


def test_parity_fails_for_a_different_model(tmp_path: Path, images: torch.Tensor) -> None:
    other = serving_model(tiny_net(seed=1))
    path = export_onnx(other, tmp_path / "other.onnx", img_size=IMG)
    report = check_parity(
        loaded_model().model, OnnxPredictor(path, torch.device("cpu")), images, 1e-3
    )
    assert not report.passed and "FAILED" in report.describe()


@pytest.fixture
def torch_threads_restored() -> Iterator[None]:
    saved = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def test_onnx_sessions_created_after_the_limit_take_it(
    tmp_path: Path, torch_threads_restored: None
) -> None:
    path = export_onnx(serving_model(tiny_net()), tmp_path / "m.onnx", img_size=IMG)
    limit_compute_threads(1)
    assert torch.get_num_threads() == 1
    session = OnnxPredictor(path, torch.device("cpu")).session
    assert session.get_session_options().intra_op_num_threads == 1
