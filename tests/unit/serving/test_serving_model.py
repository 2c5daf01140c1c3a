"""The serving contract, the exports' parity with eager, runtime selection, quantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from serving_fixtures import CLASSES, IMG, loaded_model, tiny_net, write_images
from torch import nn

from rxvision.errors import ConfigError
from rxvision.serving.model import (
    FP32_TOLERANCE,
    EagerPredictor,
    ExportParityError,
    OnnxPredictor,
    PredictorOptions,
    TorchScriptPredictor,
    autocast_dtype,
    check_parity,
    export_all,
    export_onnx,
    export_torchscript,
    image_folder_files,
    load_image_folder,
    resolve_model,
    select_predictor,
    serving_model,
)
from rxvision.serving.quantize import dynamic_quantize, static_int8

pytestmark = pytest.mark.unit


@pytest.fixture
def images(tmp_path: Path) -> torch.Tensor:
    """Real (decoded, preprocessed) images, not noise."""
    for name in CLASSES:
        write_images(tmp_path / "val" / name, 4)
    batch, _ = load_image_folder(tmp_path / "val", loaded_model())
    return batch


def test_contract_returns_logits_and_features_when_asked() -> None:
    model = serving_model(tiny_net())
    x = torch.zeros(2, 3, IMG, IMG)
    assert set(model(x)) == {"logits"}
    out = model(x, return_features=True)
    assert out["logits"].shape == (2, 3) and out["features"].shape == (2, 8)


def test_serving_model_refuses_other_modules() -> None:
    with pytest.raises(ConfigError, match=r"nn\.Sequential"):
        serving_model(nn.Linear(2, 2))


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
    from rxvision.serving.model import FILES, cache_key

    folder = tmp_path / cache_key(loaded.ref.cache_id)
    export_onnx(serving_model(tiny_net(seed=3)), folder / FILES["onnxruntime"], img_size=IMG)
    options = PredictorOptions(cache_dir=tmp_path, precision="fp32")
    chosen = select_predictor(loaded, ["onnxruntime", "eager"], images, options)
    assert chosen.runtime == "eager"
    with pytest.raises(ExportParityError):
        from rxvision.serving.model import build_predictor

        build_predictor(loaded, "onnxruntime", images, options)


def test_autocast_dtype_on_cpu_is_fp32_without_native_bf16() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    eager = EagerPredictor(loaded_model().model, cpu, torch.bfloat16)
    logits = eager.predict(torch.zeros(2, 3, IMG, IMG))
    assert logits.dtype == np.float32 and logits.shape == (2, 3)


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


def test_calibration_samples_span_every_class(tmp_path: Path) -> None:
    # sorted by class, the first 6 files would all be of the first class
    for name in CLASSES:
        write_images(tmp_path / "train" / name, 10)
    files = image_folder_files(tmp_path / "train", CLASSES, limit=6)
    assert [label for _, label in files] == [0, 1, 2, 0, 1, 2]
    assert len({path for path, _ in files}) == 6
    batch, labels = load_image_folder(tmp_path / "train", loaded_model(), limit=5)
    assert batch.shape == (5, 3, IMG, IMG) and sorted(set(labels.tolist())) == [0, 1, 2]


@pytest.mark.parametrize("uri", ["s3://bucket/model", "pills@champion", "models"])
def test_resolve_model_refuses_unknown_uris(uri: str) -> None:
    with pytest.raises(ConfigError, match="model URI"):
        resolve_model(uri, client=object())


def test_runs_uri_resolves_without_the_registry() -> None:
    ref = resolve_model("runs:/abc123/model", client=object())
    assert ref.run_id == "abc123" and ref.label == "runs:/abc123/model" and ref.immutable
