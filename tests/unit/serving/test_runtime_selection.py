"""Picking a runtime: the first that passes parity, a drifting export skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from serving_fixtures import IMG, loaded_model, tiny_net

from rxvision.serving.exports import ExportParityError, export_onnx
from rxvision.serving.model_contract import serving_model
from rxvision.serving.predictors import EagerPredictor, TorchScriptPredictor
from rxvision.serving.runtime_selection import PredictorOptions, select_predictor

pytestmark = pytest.mark.unit


def test_select_predictor_takes_the_first_that_passes(tmp_path: Path, images: torch.Tensor) -> None:
    options = PredictorOptions(cache_dir=tmp_path, precision="fp32")
    loaded = loaded_model()
    chosen = select_predictor(loaded, ["onnxruntime-int8", "onnxruntime", "eager"], images, options)
    assert chosen.runtime == "onnxruntime"  # no validated int8 export: skipped
    probed = PredictorOptions(cache_dir=tmp_path, precision="fp32", probe=True)
    fastest = select_predictor(loaded, ["torchscript", "eager"], images, probed)
    assert fastest.runtime in {"torchscript", "eager"}
    assert isinstance(fastest, (TorchScriptPredictor, EagerPredictor))


def test_select_predictor_skips_a_drifting_export(tmp_path: Path, images: torch.Tensor) -> None:
    loaded = loaded_model()
    # a stale cached export of another model under this version's name
    from rxvision.serving.exports import FILES
    from rxvision.serving.model_loading import cache_key

    folder = tmp_path / cache_key(loaded.ref.cache_id)
    export_onnx(serving_model(tiny_net(seed=3)), folder / FILES["onnxruntime"], img_size=IMG)
    options = PredictorOptions(cache_dir=tmp_path, precision="fp32")
    chosen = select_predictor(loaded, ["onnxruntime", "eager"], images, options)
    assert chosen.runtime == "eager"
    with pytest.raises(ExportParityError):
        from rxvision.serving.runtime_selection import build_predictor

        build_predictor(loaded, "onnxruntime", images, options)
