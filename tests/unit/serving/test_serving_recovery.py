"""Auto-recovery: after the cool-down the primary gets a trial batch (half-open) and is
restored when healthy; every switch is logged, counted and listed in the run summary."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from serving_fixtures import loaded_model, write_images
from torch import nn

from rxvision.serving.finalize import finalize_scoring
from rxvision.serving.metrics import StatsdSink
from rxvision.serving.model_contract import LoadedModel
from rxvision.serving.model_pool import ModelPool
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.shard import score_shard, shard_uri
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Faulty(nn.Module):
    """The wrapped model, raising while ``broken`` (a device fault, an OOM)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.broken = True

    def forward(self, x: torch.Tensor) -> object:
        if self.broken:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.inner(x)


class Counted(StatsdSink):
    """A sink that keeps its counters instead of sending them."""

    def __init__(self) -> None:
        super().__init__(None)
        self.counts: dict[str, int] = {}

    def event(self, name: str, count: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + count

    def alert(self, name: str, reason: str) -> None:
        self.event(f"alert.{name}")


def test_the_primary_is_restored_after_the_cool_down(tmp_path: Path) -> None:
    keys = [str(p) for p in write_images(tmp_path / "in", 20)]
    config = ScoringConfig(
        batch_size=4,
        download_workers=2,
        runtimes=["eager"],
        device="cpu",
        circuit={"window": 4, "error_rate": 0.5, "min_calls": 2, "cooldown_s": 10},
        statsd={"host": None},
    )
    primary = loaded_model("tiny/2", seed=1)
    fault = Faulty(primary.model)
    primary.model = fault  # type: ignore[assignment]
    models: dict[str, LoadedModel] = {"models:/tiny/2": primary, "models:/tiny/1": loaded_model()}
    clock, sink = Clock(), Counted()
    pool = ModelPool(
        "models:/tiny/2",
        "models:/tiny/1",
        config,
        sink=sink,
        loader=models.__getitem__,
        clock=clock,
    )
    output = tmp_path / "out"

    def shard(index: int) -> list[dict]:  # type: ignore[type-arg]
        sid = f"shard-{index:05d}"
        part = keys[index * 4 : index * 4 + 4]
        score_shard("models:/tiny/2", part, str(output), sid, config=config, pool=pool, sink=sink)
        return pq.read_table(shard_uri(str(output), sid)).to_pylist()

    failed = shard(0)  # the primary fails its batch: the breaker opens
    assert [r["fallback_reason"].split(":")[0] for r in failed] == ["primary_failed"] * 4
    still = shard(1)  # within the cool-down: the fallback scores
    assert {r["fallback_reason"].split(":")[0] for r in still} == {"circuit_open"}
    clock.now = 10
    trial = shard(2)  # half-open: the primary's trial batch fails, open again
    assert {r["scored_by"] for r in trial} == {"fallback"}
    assert pool.breaker.state.value == "open"
    fault.broken = False
    clock.now = 15  # 5 s after the failed trial: not cooled down yet
    assert {r["scored_by"] for r in shard(3)} == {"fallback"}
    clock.now = 20
    restored = shard(4)  # the trial succeeds: closed, the primary scores
    assert {(r["scored_by"], r["model_version"], r["fallback_reason"]) for r in restored} == {
        ("primary", "tiny/2", None)
    }
    assert pool.breaker.state.value == "closed"

    manifest = finalize_scoring(str(output), [f"shard-{i:05d}" for i in range(5)])
    events = manifest["circuit_events"]
    assert [(e["from"], e["to"], e["scoring"], e["shard_id"]) for e in events] == [
        ("closed", "open", "fallback", "shard-00000"),
        ("open", "half_open", "primary", "shard-00002"),
        ("half_open", "open", "fallback", "shard-00002"),
        ("open", "half_open", "primary", "shard-00004"),
        ("half_open", "closed", "primary", "shard-00004"),
    ]
    assert events[0]["reason"].startswith("error rate 1.00 over the last 4 images")
    assert events[2]["reason"] == "trial batch failed (4 failures)"
    assert all(e["time"].endswith("+00:00") for e in events)
    assert manifest["metrics"]["fallback_count"] == 16
    assert {k: v for k, v in sink.counts.items() if k.startswith("circuit.")} == {
        "circuit.open": 2,
        "circuit.half_open": 2,
        "circuit.closed": 1,
    }
    assert sink.counts["alert.circuit_open"] == 2
    assert Storage().exists(str(output / "_SUCCESS"))


def test_a_fallback_of_another_size_scores_what_it_was_trained_to_see(tmp_path: Path) -> None:
    keys = [str(p) for p in write_images(tmp_path / "in", 8)]
    config = ScoringConfig(
        batch_size=4, runtimes=["eager"], device="cpu", statsd={"host": None}, tta_rotations=1
    )
    primary = loaded_model("tiny/2", seed=1)
    primary.model = Faulty(primary.model)  # type: ignore[assignment]
    fallback = loaded_model("tiny/1", img_size=24)
    models = {"models:/tiny/2": primary, "models:/tiny/1": fallback}

    def score(model_uri: str, fallback_uri: str | None, out: str) -> list[dict]:  # type: ignore[type-arg]
        pool = ModelPool(model_uri, fallback_uri, config, loader=models.__getitem__)
        score_shard(model_uri, keys, out, "s", config=config, pool=pool)
        return pq.read_table(shard_uri(out, "s")).to_pylist()

    # the primary fails every batch: its 32 px batch is decoded again at the fallback's 24
    fell_back = score("models:/tiny/2", "models:/tiny/1", str(tmp_path / "a"))
    alone = score("models:/tiny/1", None, str(tmp_path / "b"))
    assert {r["scored_by"] for r in fell_back} == {"fallback"}
    assert [(r["label"], r["confidence"]) for r in fell_back] == [
        (r["label"], r["confidence"]) for r in alone
    ]
