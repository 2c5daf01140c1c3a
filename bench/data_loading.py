"""Data loading: decode + augment + collate, images/s per core.

The project's way: feature-store shards (images resized once to 224 px, stored as
uint8 arrays, memory-mapped) through the albumentations ``TrainPreset`` as training uses
it: uint8 tensors out of the loader, stacked channels-last (``collate_channels_last``),
normalized once per batch (``normalize_batch``, in
training on the device; here on the CPU, inside the timed loop). The baseline: a
torchvision ``ImageFolder`` of the same JPEGs through ``transforms.v2`` (decode every
epoch, RandomResizedCrop 224, flip, normalize). Same images, same output (3x224x224
float), same batch size, DataLoader with 0 workers (one core) and with 2.

"One core" is enforced: the 0-worker cases run pinned to one CPU (``sched_setaffinity``).
Unpinned, OpenCV's own thread pool spread the shard path's warps over both cores (1.5
cores of CPU time, measured) and flattered its "per core" rate.

    .venv/bin/python bench/data_loading.py [--images 600] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import harness
import numpy as np
import torch
from torch.utils.data import DataLoader

from rxvision.data.collate import collate_channels_last
from rxvision.data.feature_shards import FeatureShardDataset
from rxvision.data.feature_store import (
    FeatureManifest,
    ShardRecord,
    list_image_folder,
)
from rxvision.data.imaging import ImageSpec, load_image
from rxvision.data.presets import TrainPreset, normalize_batch
from rxvision.data.synth import generate_dataset


def build_shards(
    data: Path, out: Path, img_size: int, shard_size: int = 1000
) -> FeatureShardDataset:
    """The feature store's on-disk format, written locally (the store puts the same
    arrays in S3 and the training host downloads them once)."""
    rows = list_image_folder(data)
    records, paths = [], []
    for index in range(0, len(rows), shard_size):
        chunk = rows[index : index + shard_size]
        spec = ImageSpec(img_size=img_size)
        array = np.stack([load_image(data / p, spec) for p, _ in chunk])
        path = out / f"shard-{index // shard_size:05d}.npy"
        np.save(path, array, allow_pickle=False)
        records.append(ShardRecord(path.name, [p for p, _ in chunk], [lbl for _, lbl in chunk]))
        paths.append(path)
    manifest = FeatureManifest(
        key="bench",
        snapshot_hash="bench",
        config={"spec": ImageSpec(img_size=img_size).to_dict()},
        classes=sorted({lbl for _, lbl in rows}),
        images=len(rows),
        shards=records,
        created="",
        attempt="bench",
    )
    return FeatureShardDataset(
        manifest, paths, TrainPreset(img_size=img_size, normalize_in_batch=True)
    )


def baseline_dataset(data: Path, img_size: int) -> torch.utils.data.Dataset:  # type: ignore[type-arg]
    from torchvision import datasets
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(img_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    return datasets.ImageFolder(str(data), transform=transform)


def on_cores(run: Callable[[], float], cores: set[int]) -> Callable[[], float]:
    """``run`` with this process pinned to ``cores`` (workers forked during it inherit
    them), every core again afterwards."""

    def pinned() -> float:
        everything = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cores)
        try:
            return run()
        finally:
            os.sched_setaffinity(0, everything)

    return pinned


def epoch(loader: DataLoader) -> float:  # type: ignore[type-arg]
    count = 0
    for images, _ in loader:
        if images.dtype == torch.uint8:  # the model input, as training computes it
            images = normalize_batch(images)
        assert images.shape[1:] == (3, 224, 224) and images.dtype == torch.float32
        count += images.shape[0]
    return float(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--size", type=int, default=288, help="Source JPEG size (px).")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="rxv-bench-load-") as tmp:
        data = Path(tmp) / "pills"
        classes = 6
        generate_dataset(
            data,
            classes=classes,
            per_class=args.images // classes,
            size=args.size,
            seed=0,
            lookalikes=False,
        )
        (Path(tmp) / "shards").mkdir()
        shards = build_shards(data, Path(tmp) / "shards", 224)
        folder = baseline_dataset(data, 224)
        groups = []
        for workers in args.workers:
            common = {
                "batch_size": args.batch,
                "shuffle": True,
                "num_workers": workers,
                "persistent_workers": workers > 0,
            }
            # as training's loader: the crops stacked channels-last (rxvision.data.collate)
            shard_loader = DataLoader(shards, collate_fn=collate_channels_last, **common)
            folder_loader = DataLoader(folder, **common)
            cores = max(1, workers)
            # 0 workers: one core for real; with workers, every core
            allowed = {min(os.sched_getaffinity(0))} if workers == 0 else os.sched_getaffinity(0)
            groups.append(
                [
                    harness.Case(
                        f"ImageFolder+v2, {workers} workers",
                        on_cores(lambda loader=folder_loader, c=cores: epoch(loader) / c, allowed),
                    ),
                    harness.Case(
                        f"shards+albumentations, {workers} workers",
                        on_cores(lambda loader=shard_loader, c=cores: epoch(loader) / c, allowed),
                    ),
                ]
            )
        harness.measure([c for g in groups for c in g], repeats=args.repeats)
        # each case against the baseline with the same number of workers
        rows = [r for g in groups for r in harness.summarize(g, baseline=g[0].name)]
        harness.report(
            "data_loading",
            rows,
            unit="images/s per core",
            baseline="ImageFolder+v2 with the same workers",
            params=vars(args),
        )


if __name__ == "__main__":
    main()
