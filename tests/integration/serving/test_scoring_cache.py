"""The inference cache and auto-recovery against the real MLflow server and SeaweedFS:
a rescore served from the cache, an image overwritten under its key, a new champion,
the CLI's --summary and --no-cache, and the breaker closing again after its cool-down."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from serving_helpers import register, wait_for
from torch import nn

from rxvision.serving.cache import CACHED_COLUMNS, content_hash
from rxvision.serving.finalize import finalize_scoring
from rxvision.serving.model_contract import LoadedModel
from rxvision.serving.model_loading import load_model
from rxvision.serving.model_pool import ModelPool
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.scoring_run import score_batch
from rxvision.serving.shard import score_shard
from rxvision.stack.local_stack import LocalStack
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.integration

FAST = {"shard_size": 8, "batch_size": 4, "download_workers": 4, "device": "cpu"}


def new_output() -> str:
    return f"s3://rxvision-predictions/it-{uuid.uuid4().hex[:8]}"


def rows_by_key(output: str) -> dict[str, dict[str, Any]]:
    store = Storage()
    rows: dict[str, dict[str, Any]] = {}
    for uri in store.list(f"{output}/shards"):
        rows.update({r["key"]: r for r in pq.read_table(io.BytesIO(store.read(uri))).to_pylist()})
    return rows


def predictions(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in CACHED_COLUMNS}


def cli(env: dict[str, str], model: str, input_uri: str, *args: str) -> dict[str, Any]:
    """``rxvision score`` in a subprocess (configs/serving.yaml plus ``args``); the summary."""
    summary = Path(f"/tmp/score-{uuid.uuid4().hex[:8]}.json")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "rxvision.cli.score", "--model", model),
            *("--input", input_uri, "--output", new_output(), "--summary", str(summary)),
            *args,
            *("shard_size=8", "batch_size=4", "device=cpu"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    try:
        return dict(json.loads(summary.read_text()))
    finally:
        summary.unlink(missing_ok=True)


def test_cache_serves_unchanged_images_and_misses_changed_ones(
    stack: LocalStack,
    stack_env: dict[str, str],
    models: dict[str, str],
    input_uri: str,
    classes: list[str],
    pills: Path,
) -> None:
    name = models["name"]
    champion = f"models:/{name}@champion"
    cache = f"s3://rxvision-predictions/_cache-it-{uuid.uuid4().hex[:6]}"
    config = ScoringConfig(**FAST, cache={"uri": cache})
    env = {**os.environ, **stack_env, "RXVISION_SCORING_CACHE_URI": cache}

    cold_out = new_output()
    cold = score_batch(champion, input_uri, cold_out, config=config)
    assert cold["rows"] == 20 and cold["cached"] == 0
    first = rows_by_key(cold_out)

    # a rescore through the CLI: every good image from the cache, rows identical
    warm = cli(env, champion, input_uri)
    assert (warm["rows"], warm["cached"]) == (20, 18)
    # served by key and ETag from the listing: only the two error rows' objects were read
    assert warm["downloaded"] == 2
    warm_rows = rows_by_key(warm["output_uri"])
    for key, row in warm_rows.items():
        assert row["cached"] == (row["error"] is None)
        assert predictions(row) == predictions(first[key])
    # the review gallery's crops were kept beside the cache by the cold run and read
    # back by the rescore: no image fetched, no crop re-made for it
    flagged = cold["needs_review"]
    assert flagged and cold["review"]["thumbnails"] == {"reused": 0, "stored": flagged}
    manifest = json.loads(Storage().read(f"{warm['output_uri']}/_manifest.json"))
    assert manifest["review"]["thumbnails"] == {"reused": flagged, "stored": 0}
    # --no-cache: a full run
    full = cli(env, champion, input_uri, "--no-cache")
    assert (full["rows"], full["cached"]) == (20, 0)

    # one image overwritten under its key with another product's photo
    store = Storage()
    keys = sorted(k for k in first if not first[k]["error"])
    target = keys[0]
    other = next(p for p in pills.glob("*/*.jpg") if p.parent.name != Path(target).parent.name)
    # mirrored: bytes no other key has (a byte copy of another key would rightly hit)
    buffer = io.BytesIO()
    Image.open(other).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buffer, "JPEG")
    replacement = buffer.getvalue()
    store.write(target, replacement)
    changed_out = new_output()
    changed = score_batch(champion, input_uri, changed_out, config=config)
    assert changed["cached"] == 17
    # the overwritten object has a new ETag: it alone (and the error rows) was read
    assert changed["downloaded"] == 3
    row = rows_by_key(changed_out)[target]
    truth_out = new_output()
    score_batch(champion, input_uri, truth_out, config=ScoringConfig(**FAST))
    truth = rows_by_key(truth_out)[target]
    assert not row["cached"] and row["content_sha256"] == content_hash(replacement)
    # scored afresh (in another batch than the uncached run's: probabilities to fp noise)
    assert (row["label"], row["topk_labels"]) == (truth["label"], truth["topk_labels"])
    assert row["topk_probs"] == pytest.approx(truth["topk_probs"], abs=1e-5)

    # a new champion misses by construction: everything scored afresh by it
    client = MlflowClient(stack_env["MLFLOW_TRACKING_URI"])
    newer = register(stack.home, stack_env["MLFLOW_TRACKING_URI"], name, classes, seed=2)
    client.set_registered_model_alias(name, "champion", newer)
    try:
        promoted_out = new_output()
        promoted = score_batch(champion, input_uri, promoted_out, config=config)
    finally:
        client.set_registered_model_alias(name, "champion", models["good"])
    assert promoted["cached"] == 0
    scored = [r for r in rows_by_key(promoted_out).values() if not r["error"]]
    assert {r["model_version"] for r in scored} == {f"{name}/{newer}"}

    def counted() -> bool:
        return stack.metrics()["counters"].get("rxvision.scoring.cache.hits", 0) >= 18 + 17

    assert wait_for(counted), stack.metrics()["counters"]


class Faulty(nn.Module):
    """The real model, raising while ``broken`` (a device fault mid-run)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.broken = True

    def forward(self, x: torch.Tensor) -> object:
        if self.broken:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.inner(x)


def test_the_breaker_closes_again_after_its_cool_down(
    stack: LocalStack, stack_env: dict[str, str], models: dict[str, str], input_uri: str
) -> None:
    name, good = models["name"], models["good"]
    config = ScoringConfig(
        **{**FAST, "runtimes": ["eager"]},
        circuit={"window": 4, "error_rate": 0.5, "min_calls": 2, "cooldown_s": 30},
    )
    faults: list[Faulty] = []

    def loader(uri: str) -> LoadedModel:
        loaded = load_model(uri)
        if uri == f"models:/{name}/{good}":  # the primary; the fallback alias stays sound
            faults.append(Faulty(loaded.model))
            loaded.model = faults[-1]  # type: ignore[assignment]
        return loaded

    now = [0.0]
    pool = ModelPool(
        f"models:/{name}/{good}",
        f"models:/{name}@fallback",
        config,
        loader=loader,
        clock=lambda: now[0],
    )
    out = new_output()
    keys = sorted(k for k in Storage().list(input_uri) if "zz-bad" not in k)

    def shard(index: int) -> dict[str, Any]:
        sid = f"shard-{index:05d}"
        part = keys[index * 6 : index * 6 + 6]
        return score_shard(
            pool.slots["primary"].uri or "", part, out, sid, config=config, pool=pool
        ).summary

    assert shard(0)["fallback_count"] == 6  # failures: the breaker opens
    faults[0].broken = False  # the device recovers
    assert shard(1)["fallback_count"] == 6  # still cooling down
    now[0] = 30
    restored = shard(2)
    assert restored["fallback_count"] == 0
    assert restored["rows_by_model"] == {f"primary:{name}/{good}": 6}
    manifest = finalize_scoring(out, [f"shard-{i:05d}" for i in range(3)])
    assert [(e["from"], e["to"]) for e in manifest["circuit_events"]] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert manifest["metrics"]["fallback_count"] == 12

    def counted() -> bool:
        counters = stack.metrics()["counters"]
        return all(
            counters.get(f"rxvision.scoring.circuit.{s}", 0) >= 1
            for s in ("open", "half_open", "closed")
        )

    assert wait_for(counted), stack.metrics()["counters"]
