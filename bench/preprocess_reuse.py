"""The next night's preprocessing: a snapshot that adds 1% new photos to last night's,
preprocessed with the rows of unchanged photos copied from last night's feature set
(``data preprocess``, the nightly's default) vs every photo decoded and localized again
(``data preprocess --no-reuse``, what every night cost before). Both fetch the snapshot
and read it in place, under the nightly's training spec (96 px pill crop), 2 workers.

The photos (240 px synthetic pills) are ``bench/scale.py``'s, kept under
``var/bench-cache/scale/<size>``; the new ones are drawn with another seed. Each case
builds into a feature root where last night's set is the newest of its config; the
set it builds is deleted afterwards, so every repetition starts alike.

    .venv/bin/python bench/preprocess_reuse.py [--images 10000] [--new 0.01] [--repeats 3]

Uses the S3 of ``eval "$(rxvision stack env)"`` when set, else starts a throwaway stack.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import harness
from scale import CLASSES, cached_photos
from stack import bench_stack

from rxvision.data.feature_store import FeatureManifest, FeatureStore, PreprocessConfig
from rxvision.data.preprocessing import preprocess_snapshot
from rxvision.data.snapshot import SnapshotSettings, SnapshotStore
from rxvision.data.synth import generate_dataset
from rxvision.pipeline.nightly import training_spec


def next_night(photos: Path, new: int, work: Path) -> Path:
    """``photos`` (hard-linked, not copied) and ``new`` photos drawn with another seed,
    spread over the same products."""
    night = work / "night2"
    shutil.copytree(photos, night, copy_function=os.link)
    drawn = work / "new"
    per_class = max(1, new // CLASSES)
    generate_dataset(
        drawn, classes=CLASSES, per_class=per_class, size=240, seed=987_654, lookalikes=False
    )
    for path in drawn.rglob("*.jpg"):
        target = night / path.parent.name / f"new-{path.name}"
        if not target.parent.is_dir():
            raise SystemExit(f"the new photos' product {path.parent.name} is not in {photos}")
        shutil.move(path, target)
    return night


class NightBuild:
    """One build of the second night's set into a root where the first night's set is
    the newest of ``config``; the set built is deleted afterwards."""

    def __init__(
        self,
        snapshots: SnapshotStore,
        store: FeatureStore,
        first: FeatureManifest,
        config: PreprocessConfig,
        reuse: bool,
    ) -> None:
        self.snapshots, self.store, self.first = snapshots, store, first
        self.config, self.reuse = config, reuse
        self.reused: list[int] = []

    def __call__(self) -> float:
        manifest, built = preprocess_snapshot(
            self.snapshots, self.store, "night2", self.config, workers=2, reuse=self.reuse
        )
        assert built, "the second night's set existed before the build"
        self.reused.append(int(manifest.extra["reused"]))
        self.store.s3.delete_prefix(self.store.prefix(manifest.key) + "/")
        self.store.mark_newest(self.first, self.config)
        return float(manifest.images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--new", type=float, default=0.01, help="new photos, a fraction")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="the JSON report's path")
    args = parser.parse_args()
    photos = cached_photos(args.images)
    with bench_stack(), tempfile.TemporaryDirectory(prefix="rxv-bench-reuse-") as tmp:
        work = Path(tmp)
        night2 = next_night(photos, int(args.images * args.new), work)
        run = uuid.uuid4().hex[:8]
        snapshots = SnapshotStore(
            SnapshotSettings(
                registry_url=str(work / "registry.git"),
                remote_url=f"s3://rxvision-data/bench/{run}/dvc",
                cache_dir=work / "dvc",
            )
        )
        snapshots.create(photos, "night1")
        info, _ = snapshots.create(night2, "night2")
        config = PreprocessConfig.for_spec(training_spec())
        store = FeatureStore(f"s3://rxvision-data/bench/{run}/features")
        print(f"building the first night's set ({args.images} photos)", flush=True)
        first, _ = preprocess_snapshot(snapshots, store, "night1", config, workers=2)
        cold = NightBuild(snapshots, store, first, config, reuse=False)
        warm = NightBuild(snapshots, store, first, config, reuse=True)
        cases = [
            harness.Case("every photo decoded again (--no-reuse)", cold),
            harness.Case("unchanged photos' rows copied from last night's set", warm),
        ]
        harness.measure(cases, repeats=args.repeats, warmup=0)
        rows = harness.summarize(cases, baseline=cases[0].name)
        harness.report(
            "preprocess_reuse",
            rows,
            unit="images/s",
            baseline=cases[0].name,
            params={
                **{k: v for k, v in vars(args).items() if k != "out"},
                "night1": first.images,
                "night2": info.images,
                "spec": config.spec.describe(),
            },
            out=args.out,
            extra={"reused": {"cold": cold.reused, "warm": warm.reused}},
        )
        store.s3.delete_prefix(f"s3://rxvision-data/bench/{run}/")


if __name__ == "__main__":
    main()
