"""Rescoring unchanged images: the inference cache vs a cold run, S3 -> Parquet.

Both cases run ``score_batch`` (what ``rxvision score`` runs) over the same images in
S3 with the same registered model; ``cold`` turns the cache's reuse off (``--no-cache``:
decode, crop, model call for every image), ``cached`` serves every row from the cache
(each object's key and ETag come with the plan's listing: one dict lookup, no GET, no
decode, no model call; a local file is read and hashed). A third
case is the scoring DAG's incremental run over the same unchanged images: the
processed-keys manifest plans nothing (one listing, one manifest read), publishes an
empty night. Alternated in one process, after a first cold run has filled the cache.
Goal: cached >= 20x cold.

The model is the shipped CPU recipe's (ResNet-18 on the 96 px pill crop,
configs/cpu-quick.yaml) with a random backbone and a zero head, registered in the
stack's MLflow: throughput does not depend on accuracy. The synthetic pills are made once and kept
under ``var/bench-cache/``.

    .venv/bin/python bench/scoring_cache.py [--images 10000] [--repeats 2] [--local]

``--local``: images, cache and outputs on the local disk (no S3 GET per image), which
shows what the cache itself costs; written as ``scoring_cache_local.json``.

The review gallery is off unless ``--gallery``: the zero head gives every class the same
probability (0.1, under any review threshold), so every row goes to review, and the
gallery shows up to ``max_pages`` x ``max_items`` (10,000) crops.
A cold run makes each (a GET, a decode, a crop) and keeps it beside the inference cache
(``rxvision.serving.thumbnail_cache``); a cached run reads them back. With ``--gallery``
the cases show what the gallery costs on top (the report's ``gallery_thumbnails`` says
how many crops each run reused and stored); a trained model flags a few percent.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness
import torch
from mlflow.tracking import MlflowClient
from stack import bench_stack
from torch import nn

from rxvision.config.schema import MlflowTracking
from rxvision.data.synth import generate_dataset
from rxvision.home import Home, repo_root
from rxvision.pipeline import scoring
from rxvision.serving.scoring_config import ScoringConfig, load_scoring_config
from rxvision.serving.scoring_run import score_batch
from rxvision.storage.s3 import S3Store
from rxvision.train.backbones import build_backbone
from rxvision.train.config import load_train_config
from rxvision.train.tracking import RunTracker, lineage_tags

CLASSES = 10
log = logging.getLogger("bench.scoring_cache")


def pills(images: int, size: int) -> Path:
    """``images`` synthetic pill photos, made once under var/bench-cache/."""
    out = repo_root() / "var" / "bench-cache" / f"scoring-cache-{images}-{size}px"
    done = out / ".complete"
    if not done.is_file():
        shutil.rmtree(out, ignore_errors=True)
        generate_dataset(
            out, classes=CLASSES, per_class=images // CLASSES, size=size, seed=11, workers=2
        )
        done.write_text("ok\n")
    return out


def upload(folder: Path, uri: str) -> int:
    """Every JPEG under ``folder`` to ``uri``, 16 at a time; how many."""
    store = S3Store()
    paths = sorted(folder.rglob("*.jpg"))

    def put(path: Path) -> None:
        store.upload_file(path, f"{uri}/{path.relative_to(folder).as_posix()}")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, paths))
    return len(paths)


def register_model(home: Home, tracking_uri: str) -> str:
    """The CPU recipe's network and preprocessing contract, registered: a random backbone
    and a zero head, whose uniform output sends every row to review."""
    cfg = load_train_config(repo_root() / "configs" / "cpu-quick.yaml")
    backbone = build_backbone(cfg.model.architecture)
    linear = nn.Linear(backbone.num_features, CLASSES)
    # random head weights made a confident row now and then (3 of 40 in one CI run):
    # the gallery's crop counts must not depend on the draw
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    head = nn.Sequential(nn.Dropout(0.0), linear)
    net = nn.Sequential(OrderedDict(backbone=backbone.net, head=head)).eval()
    name = f"bench-cache-{uuid.uuid4().hex[:6]}"
    tracker = RunTracker(MlflowTracking(experiment_name="bench", tracking_uri=tracking_uri), home)
    run_id = tracker.start(name, lineage_tags(name, snapshot_rev="bench", snapshot_hash="-"))
    model_uri = tracker.log_model(
        net, classes=[f"ndc-{i:02d}" for i in range(CLASSES)], spec=cfg.data.image_spec
    )
    tracker.end()
    client = MlflowClient(tracking_uri)
    with contextlib.suppress(Exception):
        client.create_registered_model(name)
    version = client.create_model_version(
        name, model_uri, run_id=run_id, model_id=model_uri.removeprefix("models:/")
    )
    # a fallback alias as in production (unused: the primary never fails here)
    client.set_registered_model_alias(name, "fallback", version.version)
    return f"models:/{name}/{version.version}"


# each run's gallery thumbnails (reused from / stored in the cache), by case
THUMBNAILS: dict[str, list[dict[str, int] | None]] = {}


def rescore(
    model_uri: str, input_uri: str, config: ScoringConfig, expect_cached: int, root: str
) -> float:
    """One ``score_batch`` run into a new output under ``root``; the rows it wrote."""
    out = f"{root}/bench/cache-{uuid.uuid4().hex[:8]}"
    manifest = score_batch(model_uri, input_uri, out, config=config)
    assert manifest["cached"] == expect_cached, (manifest["cached"], expect_cached)
    case = "cached" if expect_cached else "cold"
    THUMBNAILS.setdefault(case, []).append(manifest.get("review", {}).get("thumbnails"))
    return float(manifest["rows"])


class Incremental:
    """The scoring DAG's steps with the processed-keys manifest: once a run has published
    the images, the next plans nothing (listing + manifest) and publishes an empty night."""

    def __init__(
        self, model_uri: str, input_uri: str, config: ScoringConfig, images: int, root: str
    ) -> None:
        self.input_uri, self.images, self.root = input_uri, images, root
        self.config = config.model_copy(update={"model_uri": model_uri, "fallback_uri": None})
        self.processed = f"{root}/_bench-processed-{uuid.uuid4().hex[:6]}"

    def night(self) -> list[dict[str, Any]]:
        """Plan, score (from the cache), publish one run; its planned items."""
        out = f"{self.root}/bench/incr-{uuid.uuid4().hex[:8]}"
        items = scoring.plan(
            self.input_uri, out, self.config, allow_empty=True, processed_uri=self.processed
        )
        for item in items:
            scoring.score(item, self.config)
        latest = f"{self.processed}/latest.json"
        scoring.publish(items, latest, dag_run_id=out, output=out, allow_empty=True)
        return items

    def setup(self) -> None:
        """The run that records every image as processed."""
        planned = sum(int(i["shard"]["size"]) for i in self.night())
        assert planned == self.images, (planned, self.images)

    def rerun(self) -> float:
        """A run over the same unchanged images: nothing planned."""
        assert self.night() == []
        return float(self.images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=128, help="Photo side, px.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--local",
        action="store_true",
        help="Images, cache and outputs on the local disk, MLflow in SQLite: no stack "
        "(what the cache itself costs, without S3 GETs).",
    )
    parser.add_argument(
        "--gallery",
        action="store_true",
        help="Build the review gallery in every run (every row needs review here).",
    )
    parser.add_argument("--out", type=Path, help="The report's path (default bench/results/).")
    args = parser.parse_args()
    # read by configs/review.yaml when each run loads it
    os.environ["RXVISION_REVIEW_GALLERY"] = "true" if args.gallery else "false"
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    folder = pills(args.images, args.size)
    where = contextlib.nullcontext() if args.local else bench_stack()
    with where as stack, tempfile.TemporaryDirectory(prefix="rxb-cache-") as tmp:
        home = stack.home if stack is not None else Home(Path(tmp)).ensure()
        tag = uuid.uuid4().hex[:6]
        if args.local:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
            root, input_uri = f"{tmp}/out", str(folder)
            images = len(list(folder.rglob("*.jpg")))
        else:
            root, input_uri = "s3://rxvision-predictions", f"s3://rxvision-data/bench/in-{tag}"
            images = upload(folder, input_uri)
        model_uri = register_model(home, os.environ["MLFLOW_TRACKING_URI"])
        cache_uri = f"{root}/_bench-cache-{tag}"
        base = ["statsd.host=null", "device=cpu", f"cache.uri={cache_uri}"]
        cold = load_scoring_config(overrides=[*base, "cache.reuse=false"])
        cached = load_scoring_config(overrides=base)
        cases = [
            harness.Case("cold (--no-cache)", lambda: rescore(model_uri, input_uri, cold, 0, root)),
            harness.Case(
                "cached (unchanged images)",
                lambda: rescore(model_uri, input_uri, cached, images, root),
            ),
        ]
        incremental = Incremental(model_uri, input_uri, cached, images, root)
        cases.append(
            harness.Case("incremental DAG run (nothing new)", incremental.rerun, incremental.setup)
        )
        # the warm-up's cold run fills the cache; then A B C A B C
        harness.measure(cases, repeats=args.repeats, warmup=1)
        rows = harness.summarize(cases, baseline=cases[0].name)
        name = "scoring_cache_local" if args.local else "scoring_cache"
        harness.report(
            f"{name}_gallery" if args.gallery else name,
            rows,
            unit="images/s",
            baseline=cases[0].name,
            params={
                **vars(args),
                "out": str(args.out) if args.out else None,
                "images": images,
                "model": "resnet18, 96 px pill crop (configs/cpu-quick.yaml), random weights",
                "runtimes": list(cold.runtimes),
            },
            out=args.out,
            extra={"gallery_thumbnails": THUMBNAILS},
        )
        print(f"cached vs cold: {rows[1].ratio:.1f}x (goal >= 20x) on {images} images")
        print(f"incremental vs cold: {rows[2].ratio:.1f}x")


if __name__ == "__main__":
    main()
