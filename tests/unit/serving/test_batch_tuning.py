"""Batch-size tuning on a real tiny model and real JPEGs: every runtime measured, sizes
that fail skipped, the best chosen, and scoring's choice of tag, config or default."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from serving_fixtures import loaded_model, write_images

from rxvision.serving import batch_tuning
from rxvision.serving.batch_tuning import (
    BatchTuningConfig,
    Measurement,
    TuningResult,
    best_size,
    choose_batch_size,
    tag_key,
    tune_batch_sizes,
    write_plot,
)
from rxvision.serving.exports import export_onnx, export_torchscript
from rxvision.serving.model_contract import LoadedModel, ModelRef
from rxvision.serving.model_pool import ModelPool
from rxvision.serving.predictors import EagerPredictor, OnnxPredictor, TorchScriptPredictor
from rxvision.serving.scoring_config import ScoringConfig, load_scoring_config
from rxvision.serving.shard import score_shard
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.unit

SMALL = BatchTuningConfig(candidates=[1, 4, 8], warmup_batches=1, images_per_candidate=16)
CPU = [torch.device("cpu")]


@pytest.fixture
def images(tmp_path: Path) -> torch.Tensor:
    """Six real JPEGs, decoded and preprocessed as scoring does."""
    loaded = loaded_model()
    return torch.stack([loaded.load(p) for p in write_images(tmp_path / "img", 6)])


class FailsAbove:
    """A real eager predictor that runs out of memory above ``limit`` images, as a GPU does."""

    def __init__(self, inner: EagerPredictor, limit: int) -> None:
        self.inner, self.limit = inner, limit
        self.runtime, self.device = inner.runtime, inner.device

    def predict(self, images: torch.Tensor) -> np.ndarray:
        if len(images) > self.limit:
            raise torch.OutOfMemoryError(f"cannot allocate a batch of {len(images)}")
        return self.inner.predict(images)


def test_every_exported_runtime_is_measured_at_every_size(
    images: torch.Tensor, tmp_path: Path
) -> None:
    loaded = loaded_model()
    script = export_torchscript(loaded.model, tmp_path / "m.pt")
    onnx = export_onnx(loaded.model, tmp_path / "m.onnx", img_size=loaded.img_size)
    result = tune_batch_sizes(
        {
            "eager": lambda d: EagerPredictor(loaded.model, d),
            "torchscript": lambda d: TorchScriptPredictor(script, d),
            "onnxruntime": lambda d: OnnxPredictor(onnx, d),
        },
        images,
        SMALL,
        CPU,
    )
    table = {(m.runtime, m.batch_size): m for m in result.measurements}
    assert set(table) == {
        (r, s) for r in ("eager", "torchscript", "onnxruntime") for s in (1, 4, 8)
    }
    assert all(m.device == "cpu" and m.error is None for m in result.measurements)
    assert all(m.images_per_s is not None and m.images_per_s > 0 for m in result.measurements)
    assert set(result.best) == {("eager", "cpu"), ("torchscript", "cpu"), ("onnxruntime", "cpu")}
    assert set(result.best.values()) <= {1, 4, 8}
    tags = result.tags()
    assert set(tags) == {
        "rxvision.batch_size.eager.cpu",
        "rxvision.batch_size.torchscript.cpu",
        "rxvision.batch_size.onnxruntime.cpu",
    }
    for (runtime, _), size in result.best.items():
        rows = [m for m in result.measurements if m.runtime == runtime]
        assert size == best_size(rows, SMALL.within)
    saved = json.loads(json.dumps(result.to_json()))
    assert len(saved["measurements"]) == 9 and len(saved["best"]) == 3
    plot = write_plot(result, tmp_path / "plot.png")
    assert plot is not None and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_size_that_fails_is_skipped_with_a_log_line(
    images: torch.Tensor, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = loaded_model()
    caplog.set_level(logging.WARNING, logger="rxvision.serving.batch_tuning")
    result = tune_batch_sizes(
        {"eager": lambda d: FailsAbove(EagerPredictor(loaded.model, d), limit=4)},
        images,
        SMALL,
        CPU,
    )
    by_size = {m.batch_size: m for m in result.measurements}
    assert by_size[8].images_per_s is None and "OutOfMemoryError" in str(by_size[8].error)
    assert by_size[1].images_per_s and by_size[4].images_per_s
    assert result.best[("eager", "cpu")] in {1, 4}
    assert "eager on cpu failed at batch size 8, skipped" in caplog.text


def test_a_runtime_that_does_not_build_is_skipped(
    images: torch.Tensor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = loaded_model()
    caplog.set_level(logging.WARNING, logger="rxvision.serving.batch_tuning")
    missing = tmp_path / "never-exported.onnx"
    result = tune_batch_sizes(
        {
            "onnxruntime": lambda d: OnnxPredictor(missing, d),
            "eager": lambda d: EagerPredictor(loaded.model, d),
        },
        images,
        SMALL,
        CPU,
    )
    assert set(result.best) == {("eager", "cpu")}
    assert {m.runtime for m in result.measurements} == {"eager"}
    assert "onnxruntime on cpu unavailable, skipped" in caplog.text


def test_best_is_the_smallest_size_within_the_margin_of_the_fastest() -> None:
    rows = [
        Measurement("eager", "cpu", 1, 50.0),
        Measurement("eager", "cpu", 8, 97.0),
        Measurement("eager", "cpu", 16, 100.0),
        Measurement("eager", "cpu", 64, None, "OutOfMemoryError"),
    ]
    assert best_size(rows, 0.05) == 8
    assert best_size(rows, 0.0) == 16
    assert best_size([Measurement("eager", "cpu", 8, None, "x")], 0.05) is None


def test_by_default_the_fastest_size_is_best_even_when_a_smaller_is_close() -> None:
    # the model call alone puts 8 within 5% of 32; the scoring job pays per batch on top
    rows = [
        Measurement("onnxruntime-int8", "cpu", 8, 790.0),
        Measurement("onnxruntime-int8", "cpu", 16, 795.0),
        Measurement("onnxruntime-int8", "cpu", 32, 825.0),
        Measurement("onnxruntime-int8", "cpu", 64, 810.0),
    ]
    assert best_size(rows, BatchTuningConfig().within) == 32
    assert best_size(rows, load_scoring_config().batch_tuning.within) == 32


def test_candidates_are_sorted_and_must_be_positive() -> None:
    assert BatchTuningConfig(candidates=[32, 1, 8, 8]).candidates == [1, 8, 32]
    with pytest.raises(ValueError, match="batch sizes must be >= 1"):
        BatchTuningConfig(candidates=[0, 8])


def test_choice_config_then_tag_then_default() -> None:
    tags = {"rxvision.batch_size.onnxruntime.cpu": "16", "rxvision.batch_size.eager.cuda": "64"}
    tuned = choose_batch_size(None, tags, "onnxruntime", "cpu")
    assert (tuned.size, tuned.source) == (16, "tuned")
    assert "rxvision.batch_size.onnxruntime.cpu=16" in tuned.reason
    assert choose_batch_size(None, tags, "eager", "cuda:0").size == 64  # per kind of device
    forced = choose_batch_size(4, tags, "onnxruntime", "cpu")
    assert (forced.size, forced.source) == (4, "config")
    assert "tuned size 16" in forced.reason and "overridden" in forced.reason
    default = choose_batch_size(None, tags, "torchscript", "cpu")
    assert (default.size, default.source) == (32, "default")
    broken = choose_batch_size(None, {"rxvision.batch_size.eager.cpu": "zero"}, "eager", "cpu")
    assert broken.source == "default"
    assert tag_key("onnxruntime-int8", torch.device("cuda", 1)) == (
        "rxvision.batch_size.onnxruntime-int8.cuda"
    )


def test_serving_config_tunes_by_default_and_leaves_batch_size_to_the_tag() -> None:
    config = load_scoring_config()
    assert config.batch_size is None
    assert config.batch_tuning.enabled and config.batch_tuning.candidates == [1, 8, 16, 32, 64]
    assert load_scoring_config(overrides=["batch_size=64"]).batch_size == 64


def tagged_model(size: int) -> LoadedModel:
    loaded = loaded_model()
    ref = loaded.ref
    loaded.ref = ModelRef(
        ref.uri, ref.pinned_uri, ref.label, tags={"rxvision.batch_size.eager.cpu": str(size)}
    )
    return loaded


@pytest.mark.parametrize(("configured", "size", "source"), [(None, 3, "tuned"), (5, 5, "config")])
def test_scoring_uses_the_tagged_size_unless_configured(
    tmp_path: Path,
    config: ScoringConfig,
    caplog: pytest.LogCaptureFixture,
    configured: int | None,
    size: int,
    source: str,
) -> None:
    keys = [str(p) for p in write_images(tmp_path / "in", 10)]
    config = config.model_copy(update={"batch_size": configured})
    pool = ModelPool("models:/tiny/1", None, config, loader=lambda uri: tagged_model(3))
    caplog.set_level(logging.INFO, logger="rxvision.serving.model_pool")
    result = score_shard(
        "models:/tiny/1",
        keys,
        str(tmp_path / "out"),
        "shard-00000",
        config=config,
        pool=pool,
        storage=Storage(),
    )
    primary = result.summary["models"]["primary"]
    assert (primary["batch_size"], primary["batch_size_source"]) == (size, source)
    assert result.summary["batches"] == -(-10 // size)  # ceil: every batch full but the last
    assert f"scores in batches of {size} with eager on cpu" in caplog.text
    reason = "tuned at export" if source == "tuned" else f"batch_size={size} is configured"
    assert reason in caplog.text


def test_tuning_result_without_runs_has_no_tags() -> None:
    assert TuningResult().tags() == {}


class Slow:
    """A real eager predictor that takes a fixed 0.2 s per call on the tuner's clock, as
    batch 1 of a big model on a busy CPU does. The clock is a counter the calls advance:
    a real sleep left the test 84 ms of slack for the predict, which a loaded 2-core CI
    machine can take (found by an audit of timing-sensitive tests)."""

    def __init__(self, inner: EagerPredictor) -> None:
        self.inner, self.runtime, self.device = inner, inner.runtime, inner.device
        self.calls = 0
        self.clock_s = 0.0

    def perf_counter(self) -> float:
        return self.clock_s

    def predict(self, images: torch.Tensor) -> np.ndarray:
        self.calls += 1
        self.clock_s += 0.2
        return self.inner.predict(images)


def test_a_slow_size_stops_after_its_time_budget(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = Slow(EagerPredictor(loaded_model().model, torch.device("cpu")))
    monkeypatch.setattr(batch_tuning, "time", slow)
    config = BatchTuningConfig(
        candidates=[1], warmup_batches=1, images_per_candidate=1000, max_seconds_per_candidate=0.3
    )
    result = tune_batch_sizes({"eager": lambda d: slow}, images, config, CPU)
    assert slow.calls == 1 + 2  # the warm-up, then two timed calls: past 0.3 s after the 2nd
    assert result.measurements[0].images_per_s is not None
    assert result.best == {("eager", "cpu"): 1}
