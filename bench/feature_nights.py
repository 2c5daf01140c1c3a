"""Many nights of the feature store: each night's snapshot is the last one's photos plus
``--new`` of them drawn anew, and its feature set is built with the sets before it at
hand (``preprocess_snapshot``: unchanged rows read in place from an earlier set's objects
or copied, new photos decoded). Per night: seconds, the set's shard objects, how many are
under half a shard (small), the rows read in place and the earlier sets read.

What it shows: the time per night stays flat and the set's objects do not grow by one
small shard a night (a small shard's rows are copied into the next night's new shard).
The baseline is the last night's snapshot built with nothing before it (every photo
decoded and localized); the ratio is its time over a night's.

    .venv/bin/python bench/feature_nights.py [--images 10000] [--nights 8] [--new 0.01]

The photos are ``bench/scale.py``'s (240 px, kept under ``var/bench-cache/scale``);
the nightly's training spec (96 px pill crop), 2 workers. Uses the S3 of
``eval "$(rxvision stack env)"`` when set, else starts a throwaway stack.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import harness
from stack import bench_stack

from rxvision.data.feature_store import FeatureManifest, FeatureStore, PreprocessConfig
from rxvision.data.preprocessing import preprocess_snapshot
from rxvision.data.settings import load_data_config, preprocess_config, snapshot_store
from rxvision.data.snapshot import SnapshotStore
from rxvision.data.synth import generate_dataset
from rxvision.pipeline.nightly import training_spec
from rxvision.storage.s3 import S3Store


def add_new_photos(last: Path, night: int, new: int, work: Path) -> Path:
    """Night ``night``'s photos: ``last``'s (hard links) and ``new`` drawn with a seed of
    its own, spread over the same products."""
    from scale import CLASSES  # here, not above: see main

    folder = work / f"night{night}"
    shutil.copytree(last, folder, copy_function=os.link)
    drawn = work / f"drawn{night}"
    generate_dataset(
        drawn,
        classes=CLASSES,
        per_class=max(1, new // CLASSES),
        size=240,
        seed=1_000_003 * night,
        lookalikes=False,
    )
    for path in drawn.rglob("*.jpg"):
        shutil.move(path, folder / path.parent.name / f"n{night}-{path.name}")
    shutil.rmtree(drawn)
    return folder


def night_row(night: int, seconds: float, built: FeatureManifest, shard_size: int) -> dict:
    """What a night's set holds and what it cost."""
    sizes = [len(shard.paths) for shard in built.shards]
    return {
        "night": night,
        "images": built.images,
        "seconds": round(seconds, 2),
        "shards": len(sizes),
        "small": sum(size < shard_size / 2 for size in sizes),
        "reused": int(built.extra.get("reused", 0)),
        "read_in_place": int(built.extra.get("read_in_place", 0)),
        "sets_read": len(built.sets_read()),
    }


def build_nights(
    snapshots: SnapshotStore,
    features: FeatureStore,
    pre: PreprocessConfig,
    photos: Path,
    args: argparse.Namespace,
    work: Path,
) -> list[dict]:
    """Night 1 built from nothing, then each next night with the sets before it."""
    rows, folder = [], photos
    for night in range(1, args.nights + 1):
        if night > 1:
            folder = add_new_photos(folder, night, int(args.images * args.new), work)
        snapshots.create(folder, f"night{night}")
        began = time.perf_counter()
        built, _ = preprocess_snapshot(snapshots, features, f"night{night}", pre)
        rows.append(night_row(night, time.perf_counter() - began, built, pre.shard_size))
        print(" ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)
    return rows


def build_cold(
    snapshots: SnapshotStore, root: str, pre: PreprocessConfig, tag: str, repeats: int
) -> list[tuple[float, float]]:
    """``tag``'s set built with nothing before it: (images, seconds) per repetition."""
    runs = []
    for _ in range(repeats):
        store = FeatureStore(root)
        began = time.perf_counter()
        built, _ = preprocess_snapshot(snapshots, store, tag, pre, reuse=False)
        runs.append((float(built.images), time.perf_counter() - began))
        store.s3.delete_prefix(root.rstrip("/") + "/")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--nights", type=int, default=8)
    parser.add_argument("--new", type=float, default=0.01, help="new photos a night, a fraction")
    parser.add_argument("--repeats", type=int, default=1, help="cold builds of the last night")
    parser.add_argument("--out", type=Path, default=None, help="the JSON report's path")
    # imported here, not at the top: tests import this module's counting, and bench/scale.py
    # as ``scale`` would hide the test folder of that name from pytest
    from nightly_reuse import data_config
    from scale import cached_photos

    args = parser.parse_args()
    if args.nights < 2:
        parser.error("--nights must be at least 2 (night 1 has nothing before it)")
    photos = cached_photos(args.images)
    with bench_stack(), tempfile.TemporaryDirectory(prefix="rxv-bench-nights-") as tmp:
        work = Path(tmp)
        os.environ["RXVISION_HOME"] = str(work / "home")
        run_uri = f"s3://rxvision-data/bench/{uuid.uuid4().hex[:8]}"
        cfg = data_config(load_data_config(), work / "registry.git", run_uri, f"{run_uri}/features")
        pre = PreprocessConfig.for_spec(
            training_spec(), shard_size=preprocess_config(cfg).shard_size
        )
        snapshots = snapshot_store(cfg)
        try:
            rows = build_nights(
                snapshots, FeatureStore(cfg.feature_store.uri), pre, photos, args, work
            )
            cold = build_cold(
                snapshots, f"{run_uri}/cold", pre, f"night{args.nights}", args.repeats
            )
        finally:
            S3Store().delete_prefix(f"{run_uri}/")
    warm = harness.Case("a night with the sets before it", lambda: 0.0)
    warm.samples = [row["images"] / row["seconds"] for row in rows[1:]]
    baseline = harness.Case("the last night with nothing before it", lambda: 0.0)
    baseline.samples = [images / seconds for images, seconds in cold]
    cases = [baseline, warm]
    harness.report(
        "feature_nights",
        harness.summarize(cases, baseline=baseline.name),
        unit="images/s",
        baseline=baseline.name,
        out=args.out,
        params={
            **{k: v for k, v in vars(args).items() if k != "out"},
            "shard_size": pre.shard_size,
            "spec": pre.spec.describe(),
        },
        extra={"nights": rows},
    )


if __name__ == "__main__":
    main()
