"""A runtime file's parity check recorded on this host: later tasks trust it and never
load the eager network, unless the file, the tolerance or the record changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from serving_fixtures import CLASSES, IMG, loaded_model, tiny_net

from rxvision.data.imaging import ImageSpec
from rxvision.serving.exports import FILES, ExportParityError, export_onnx
from rxvision.serving.model_contract import LoadedModel, ModelRef, ServingModel, serving_model
from rxvision.serving.model_loading import cache_key
from rxvision.serving.parity_record import parity_record_path
from rxvision.serving.runtime_selection import PredictorOptions, build_predictor

pytestmark = pytest.mark.unit


class CountingLoader:
    """A network loader that counts its calls (a later task's lazy unpickling)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.calls = 0

    def __call__(self) -> ServingModel:
        self.calls += 1
        return serving_model(tiny_net(self.seed))


def lazy_model(loader: CountingLoader, pinned: str = "models:/tiny/1") -> LoadedModel:
    """The same version as ``loaded_model()``, its network not loaded yet."""
    ref = ModelRef(uri=pinned, pinned_uri=pinned, label="tiny/1")
    return LoadedModel(loader, CLASSES, ImageSpec(img_size=IMG), ref)


def onnx_file(cache_dir: Path) -> Path:
    return cache_dir / cache_key(loaded_model().ref.cache_id) / FILES["onnxruntime"]


def checked_by_a_first_task(tmp_path: Path, images: torch.Tensor) -> tuple[PredictorOptions, Path]:
    """A first task's build: the version's ONNX file exported and checked; the options it
    used and the record it left."""
    options = PredictorOptions(cache_dir=tmp_path, precision="fp32")
    build_predictor(loaded_model(), "onnxruntime", images, options)
    return options, parity_record_path(onnx_file(tmp_path))


def test_a_later_task_trusts_the_recorded_check_and_never_loads_the_network(
    tmp_path: Path, images: torch.Tensor
) -> None:
    options = PredictorOptions(cache_dir=tmp_path, precision="fp32")
    first = build_predictor(loaded_model(), "onnxruntime", images, options)
    record = json.loads(parity_record_path(onnx_file(tmp_path)).read_text())
    assert record["report"]["runtime"] == "onnxruntime"
    assert record["report"]["images"] == len(images)
    assert record["conditions"]["torch"] == torch.__version__

    loader = CountingLoader()
    later = build_predictor(lazy_model(loader), "onnxruntime", images, options)
    assert loader.calls == 0
    assert np.array_equal(later.predict(images), first.predict(images))


def test_a_replaced_file_or_a_stricter_tolerance_is_checked_again(
    tmp_path: Path, images: torch.Tensor
) -> None:
    options, record = checked_by_a_first_task(tmp_path, images)
    # a check recorded with a diff that passed then but is over a stricter tolerance now
    data = json.loads(record.read_text())
    data["report"].update(max_abs_diff=options.tolerance / 2, tolerance=options.tolerance)
    record.write_text(json.dumps(data))
    strict = PredictorOptions(cache_dir=tmp_path, precision="fp32", tolerance=options.tolerance / 4)
    loader = CountingLoader()
    build_predictor(lazy_model(loader), "onnxruntime", images, strict)
    assert loader.calls == 1

    # another model's export under this version's name (a stale or tampered file)
    path = onnx_file(tmp_path)
    export_onnx(serving_model(tiny_net(seed=3)), path, img_size=IMG)
    os.utime(path, ns=(1, 1))  # whatever the clock, the file's mtime differs from the record
    loader = CountingLoader()
    with pytest.raises(ExportParityError):
        build_predictor(lazy_model(loader), "onnxruntime", images, options)
    assert loader.calls == 1


def test_an_unreadable_record_is_no_record_and_is_rewritten(
    tmp_path: Path, images: torch.Tensor
) -> None:
    options, record = checked_by_a_first_task(tmp_path, images)
    record.write_text('{"conditions": ')  # a torn write of another host's tool
    loader = CountingLoader()
    build_predictor(lazy_model(loader), "onnxruntime", images, options)
    assert loader.calls == 1
    assert json.loads(record.read_text())["report"]["runtime"] == "onnxruntime"


def test_a_mutable_model_uri_is_never_recorded(tmp_path: Path, images: torch.Tensor) -> None:
    options = PredictorOptions(cache_dir=tmp_path, precision="fp32")
    loaded = lazy_model(CountingLoader(), pinned="models:/tiny@champion")
    build_predictor(loaded, "onnxruntime", images, options)
    folder = tmp_path / cache_key(loaded.ref.cache_id)
    assert (folder / FILES["onnxruntime"]).is_file()
    assert not list(folder.glob("*.parity.json"))
