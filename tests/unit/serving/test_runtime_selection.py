"""Picking a runtime: the first that passes parity, a drifting export skipped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from serving_fixtures import IMG, loaded_model, tiny_net

from rxvision.serving import runtime_selection
from rxvision.serving.exports import TAG, ExportParityError, export_onnx
from rxvision.serving.int8_record import INT8_GATE
from rxvision.serving.model_contract import LoadedModel, serving_model
from rxvision.serving.predictors import EagerPredictor, RuntimeUnavailable, TorchScriptPredictor
from rxvision.serving.runtime_selection import (
    PredictorOptions,
    build_predictor,
    select_predictor,
)

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
        build_predictor(loaded, "onnxruntime", images, options)


def judged_int8_model(
    tmp_path: Path, images: torch.Tensor, gate: str | None, **more_tags: str
) -> LoadedModel:
    """A version whose kept INT8 file is in the local cache, tagged with ``gate``."""
    from rxvision.serving.exports import FILES
    from rxvision.serving.model_loading import cache_key
    from rxvision.serving.quantize import static_quantize_onnx

    plain = loaded_model()
    tags = {f"{TAG}.int8.kept": "true"} | ({f"{TAG}.int8.gate": gate} if gate else {})
    tags |= {f"{TAG}.int8.{key}": value for key, value in more_tags.items()}
    loaded = replace(plain, ref=replace(plain.ref, tags=tags))
    folder = tmp_path / cache_key(loaded.ref.cache_id)
    onnx_path = export_onnx(loaded.model, tmp_path / "fp32.onnx", img_size=IMG)
    static_quantize_onnx(onnx_path, [images.numpy()], folder / FILES["onnxruntime-int8"])
    return loaded


def test_int8_scores_only_a_version_judged_on_calibration_and_review_on_a_cpu(
    tmp_path: Path, images: torch.Tensor
) -> None:
    preference = ["onnxruntime-int8", "onnxruntime", "eager"]
    options = PredictorOptions(cache_dir=tmp_path, precision="fp32")
    judged = judged_int8_model(tmp_path, images, INT8_GATE)
    assert select_predictor(judged, preference, images, options).runtime == "onnxruntime-int8"
    # kept on top-1 alone (exported before the gate): the file is there, and not used
    old = judged_int8_model(tmp_path, images, "top1")
    assert select_predictor(old, preference, images, options).runtime == "onnxruntime"
    with pytest.raises(RuntimeUnavailable, match=r"int8\.gate: top1\); `rxvision model export`"):
        build_predictor(old, "onnxruntime-int8", images, options)
    # judged on the CPU: never on a GPU, whatever the tag
    gpu = PredictorOptions(cache_dir=tmp_path, device=torch.device("cuda"))
    with pytest.raises(RuntimeUnavailable, match="judged on the CPU, not on cuda"):
        build_predictor(judged, "onnxruntime-int8", images, gpu)


def test_int8_with_full_range_weights_needs_a_cpu_with_vnni(
    tmp_path: Path, images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = PredictorOptions(cache_dir=tmp_path, precision="fp32")
    full = judged_int8_model(tmp_path, images, INT8_GATE, reduce_range="false")
    reduced = judged_int8_model(tmp_path, images, INT8_GATE, reduce_range="true")
    # a scoring host whose CPU lacks VNNI (its u8s8 sums could saturate)
    monkeypatch.setattr(runtime_selection, "cpu_has_vnni", lambda: False)
    with pytest.raises(RuntimeUnavailable, match="needs a CPU with VNNI"):
        build_predictor(full, "onnxruntime-int8", images, options)
    assert build_predictor(reduced, "onnxruntime-int8", images, options).runtime == (
        "onnxruntime-int8"
    )
    monkeypatch.setattr(runtime_selection, "cpu_has_vnni", lambda: True)
    assert build_predictor(full, "onnxruntime-int8", images, options).runtime == (
        "onnxruntime-int8"
    )
