"""The next night's data stages: a snapshot that adds 1% new photos to last night's, run
through the nightly DAG's own task functions (``pull_snapshot``, ``validate_snapshot``,
``preprocess``), with last night's work at hand (the facts of the files it inspected,
its feature set) vs without (a fresh reports prefix and feature root: every photo
decoded and localized again, what every night cost before).

The cold case pulls into an empty DVC cache (a new host: every shard fetched from S3 and
verified); the warm one into the DVC cache as last night's pull left it, beside last
night's checkout (the shards that did not change are neither fetched nor hashed again).
The snapshots are created on another host's cache. Both validate with the data config's
policy and preprocess under the nightly's training spec (96 px pill crop), 2 workers. The
photos (240 px synthetic pills) are ``bench/scale.py``'s, kept under
``var/bench-cache/scale/<size>``; the new ones are drawn with another seed. After each
repetition what it wrote (its pull, its set, its facts) is put back as it was, so every
repetition starts alike. Seconds per stage are in the report's ``stages``. Not in the
sum: the training host's download of the new set (``training_download``), into a cache
that holds last night's set (warm) or nothing (cold).

    .venv/bin/python bench/nightly_reuse.py [--images 10000] [--new 0.01] [--repeats 3]

Uses the S3 of ``eval "$(rxvision stack env)"`` when set, else starts a throwaway stack.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import harness
from scale import CLASSES, cached_photos
from stack import bench_stack

from rxvision.config.schema import DataConfig
from rxvision.data.feature_store import FeatureManifest, PreprocessConfig
from rxvision.data.settings import (
    feature_store,
    load_data_config,
    snapshot_store,
    validation_policy,
)
from rxvision.data.snapshot import SnapshotSettings, SnapshotStore
from rxvision.data.synth import generate_dataset
from rxvision.pipeline import nightly
from rxvision.pipeline.facts_store import known_facts_uri
from rxvision.storage.s3 import S3Store

STAGES = ("pull", "validate", "preprocess")


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


def data_config(base: DataConfig, registry: Path, run_uri: str, features: str) -> DataConfig:
    """The data config with this run's registry, DVC remote and feature root."""
    return base.model_copy(
        update={
            "registry": base.registry.model_copy(
                update={"url": str(registry), "remote": f"{run_uri}/dvc"}
            ),
            "feature_store": base.feature_store.model_copy(update={"uri": features}),
        }
    )


class NightStages:
    """The second night's pull, validate and preprocess, timed per stage; ``reports`` is
    the prefix its report (and the facts beside it) go to."""

    def __init__(
        self,
        cfg: DataConfig,
        reports: str,
        first: FeatureManifest | None,
        host_cache: Path,
        dvc_start: Path | None,
    ) -> None:
        self.cfg, self.reports, self.first = cfg, reports.rstrip("/"), first
        self.host_cache = host_cache
        # the worker's DVC cache, and what it holds when the night begins (None: nothing)
        self.dvc_cache = snapshot_store(cfg).settings.cache_dir / "dvc-cache"
        self.dvc_start = dvc_start
        self.stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
        # not summed: the training host's download of the new set, into a cache that
        # holds last night's set when there was one
        self.download: list[float] = []
        self.reused: list[dict[str, int]] = []
        policy = validation_policy(cfg)
        self.facts_uri = known_facts_uri(f"{self.reports}/night2.json", policy)
        s3 = S3Store()
        self.facts = s3.get_bytes(self.facts_uri) if first is not None else None

    def __call__(self) -> tuple[float, float]:
        report = f"{self.reports}/night2-{uuid.uuid4().hex[:6]}.json"
        restore_dvc_cache(self.dvc_cache, self.dvc_start)
        began = time.perf_counter()
        pulled = nightly.pull_snapshot("night2", self.cfg)
        self.stages["pull"].append(time.perf_counter() - began)
        began = time.perf_counter()
        nightly.validate_snapshot("night2", report, self.cfg)
        self.stages["validate"].append(time.perf_counter() - began)
        began = time.perf_counter()
        features = nightly.preprocess("night2", report, self.cfg)
        self.stages["preprocess"].append(time.perf_counter() - began)
        facts_reused = int(json.loads(S3Store().get_bytes(report))["facts_reused"])
        self.reused.append(
            {
                "facts": facts_reused,
                "rows": int(features["reused"]),
                "in_place": int(features["read_in_place"]),
            }
        )
        # the three stages are timed, not the reading of the report nor the put-back
        seconds = sum(self.stages[stage][-1] for stage in STAGES)
        store = feature_store(self.cfg)
        built = store.manifest(features["features_uri"].rsplit("/", 1)[1])
        assert built is not None
        began = time.perf_counter()
        store.download(built, self.host_cache)
        self.download.append(time.perf_counter() - began)
        shutil.rmtree(self.host_cache / built.key)
        self.put_back(pulled["path"], features["features_uri"])
        return float(features["images"]), seconds

    def put_back(self, pulled: str, features_uri: str) -> None:
        """Undo this repetition: its pull, its feature set, the facts it wrote."""
        shutil.rmtree(pulled)
        s3 = S3Store()
        if self.first is None:
            s3.delete_prefix(f"{self.reports}/")
            s3.delete_prefix(self.cfg.feature_store.uri.rstrip("/") + "/")
            return
        s3.delete_prefix(features_uri.rstrip("/") + "/")
        feature_store(self.cfg).mark_newest(self.first, built_with(self.first))
        assert self.facts is not None
        s3.put_bytes(self.facts_uri, self.facts)


def restore_dvc_cache(cache: Path, start: Path | None) -> None:
    """The worker's DVC cache as the night finds it: ``start``'s objects (hard links)."""
    shutil.rmtree(cache, ignore_errors=True)
    if start is not None:
        shutil.copytree(start, cache, copy_function=os.link)


def built_with(manifest: FeatureManifest) -> PreprocessConfig:
    """The preprocessing config a set was built with (for ``mark_newest``)."""
    return PreprocessConfig.for_spec(manifest.spec, shard_size=manifest.config["shard_size"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--new", type=float, default=0.01, help="new photos, a fraction")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="the JSON report's path")
    args = parser.parse_args()
    photos = cached_photos(args.images)
    with bench_stack(), tempfile.TemporaryDirectory(prefix="rxv-bench-nightly-") as tmp:
        work = Path(tmp)
        # the worker's cache (pulled snapshots, DVC cache) of this run alone
        os.environ["RXVISION_HOME"] = str(work / "home")
        night2 = next_night(photos, int(args.images * args.new), work)
        run = uuid.uuid4().hex[:8]
        run_uri = f"s3://rxvision-data/bench/{run}"
        base = load_data_config()
        warm_cfg = data_config(base, work / "registry.git", run_uri, f"{run_uri}/features")
        snapshots = snapshot_store(warm_cfg)
        creator = SnapshotStore(
            SnapshotSettings(**{**vars(snapshots.settings), "cache_dir": work / "creator"})
        )
        creator.create(photos, "night1")
        info, _ = creator.create(night2, "night2")
        kept = getattr(info, "shards_kept", 0)  # 0 from code before the shards were kept
        print(f"night 2: {info.shards} shards, {kept} of them night 1's", flush=True)
        print(f"last night: {args.images} photos through the nightly's stages", flush=True)
        warm_reports = f"{run_uri}/reports"
        nightly.validate_snapshot("night1", f"{warm_reports}/night1.json", warm_cfg)
        built = nightly.preprocess("night1", f"{warm_reports}/night1.json", warm_cfg)
        first = feature_store(warm_cfg).manifest(built["features_uri"].rsplit("/", 1)[1])
        assert first is not None
        night1_objects = work / "night1-dvc-cache"
        shutil.copytree(
            snapshots.settings.cache_dir / "dvc-cache", night1_objects, copy_function=os.link
        )
        cold_cfg = data_config(base, work / "registry.git", run_uri, f"{run_uri}/cold-features")
        cold = NightStages(cold_cfg, f"{run_uri}/cold-reports", None, work / "host-cold", None)
        warm = NightStages(warm_cfg, warm_reports, first, work / "host-warm", night1_objects)
        feature_store(warm_cfg).download(first, warm.host_cache)
        cases = [
            harness.Case("nothing from last night (every photo decoded)", cold),
            harness.Case("last night's facts and rows reused", warm),
        ]
        harness.measure(cases, repeats=args.repeats, warmup=0)
        rows = harness.summarize(cases, baseline=cases[0].name)
        harness.report(
            "nightly_reuse",
            rows,
            unit="images/s",
            baseline=cases[0].name,
            out=args.out,
            params={
                **{k: v for k, v in vars(args).items() if k != "out"},
                "night1": first.images,
                "night2": info.images,
                "night2_shards": [info.shards, kept],
                "spec": first.spec.describe(),
            },
            extra={
                "stages": {"cold": cold.stages, "warm": warm.stages},
                "reused": {"cold": cold.reused, "warm": warm.reused},
                "training_download": {"cold": cold.download, "warm": warm.download},
            },
        )
        for name, case in (("cold", cold), ("warm", warm)):
            medians = {s: sorted(v)[len(v) // 2] for s, v in case.stages.items()}
            stages = " ".join(f"{s} {t:.1f} s" for s, t in medians.items())
            fetch = sorted(case.download)[len(case.download) // 2]
            print(name, stages, case.reused, f"(training's download {fetch:.1f} s)")
        S3Store().delete_prefix(f"{run_uri}/")


if __name__ == "__main__":
    main()
