"""Data sources, the stratified split and the loaders."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from rxvision.data.feature_store import FeatureManifest, ShardRecord
from rxvision.errors import ConfigError, NotFound
from rxvision.train.config import DataLoadingConfig
from rxvision.train.datamodule import RxVisionDataModule, resolve_data, stratified_split

pytestmark = pytest.mark.unit


def test_split_is_stratified_seeded_and_disjoint() -> None:
    labels = [0] * 10 + [1] * 20 + [2] * 5
    train, val = stratified_split(labels, 0.2, seed=3)
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == list(range(len(labels)))
    assert [sum(labels[i] == c for i in val) for c in range(3)] == [2, 4, 1]
    assert stratified_split(labels, 0.2, seed=3) == (train, val)
    assert stratified_split(labels, 0.2, seed=4) != (train, val)


def test_every_class_keeps_a_training_image() -> None:
    train, val = stratified_split([0, 0, 1, 1], 0.9, seed=0)
    assert sorted(train) == sorted({0, 1, 2, 3} - set(val))
    assert {[0, 0, 1, 1][i] for i in train} == {0, 1}


def test_image_folder_source_and_loaders(image_folder: Path) -> None:
    source = resolve_data(image_folder)
    assert source.classes == ["class-0", "class-1", "class-2"]
    assert source.snapshot_hash is None
    config = DataLoadingConfig(img_size=16, val_fraction=0.34, num_workers=0)
    dm = RxVisionDataModule(source, config, batch_size=4)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    val_batches = list(dm.val_dataloader())
    assert sum(len(b[1]) for b in val_batches) == len(dm.val_indices) == 6
    assert dm.class_counts() == {"class-0": 4, "class-1": 4, "class-2": 4}


def test_loader_tuning(image_folder: Path) -> None:
    source = resolve_data(image_folder)
    config = DataLoadingConfig(img_size=16, num_workers=1, prefetch_factor=3)
    dm = RxVisionDataModule(source, config, batch_size=4, pin_memory=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == 1
    assert loader.persistent_workers
    assert loader.prefetch_factor == 3
    assert not loader.pin_memory
    assert loader.drop_last
    no_workers = RxVisionDataModule(
        source, DataLoadingConfig(img_size=16, num_workers=0), batch_size=4
    )
    no_workers.setup("fit")
    assert not no_workers.train_dataloader().persistent_workers


@pytest.mark.parametrize(
    ("n_train", "batch", "world", "accumulate", "steps"),
    [
        (100, 32, 1, 1, 3),
        (100, 32, 2, 1, 1),
        (100, 10, 1, 3, 4),
        (5, 8, 1, 1, 1),
        (64, 32, 1, 1, 2),
    ],
)
def test_steps_per_epoch(
    n_train: int, batch: int, world: int, accumulate: int, steps: int, image_folder: Path
) -> None:
    source = resolve_data(image_folder)
    dm = RxVisionDataModule(source, DataLoadingConfig(), batch_size=batch, world_size=world)
    dm.train_indices = list(range(n_train))
    assert dm.steps_per_epoch(accumulate) == steps


def test_local_feature_manifest(tmp_path: Path) -> None:
    shard_dir = tmp_path / "features" / "key1"
    (shard_dir / "attempts" / "a1").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 255, size=(6, 20, 20, 3), dtype=np.uint8)
    np.save(shard_dir / "attempts" / "a1" / "shard-00000.npy", pixels)
    labels = ["x", "y", "x", "y", "x", "y"]
    manifest = FeatureManifest(
        key="key1",
        snapshot_hash="abc123",
        config={"img_size": 20},
        classes=["x", "y"],
        images=6,
        shards=[ShardRecord("attempts/a1/shard-00000.npy", [f"p{i}" for i in range(6)], labels)],
        created="now",
        attempt="a1",
    )
    (shard_dir / "manifest.json").write_text(json.dumps(asdict(manifest)))
    source = resolve_data(shard_dir)  # the folder or the file itself
    assert resolve_data(shard_dir / "manifest.json").labels == source.labels == [0, 1] * 3
    assert source.snapshot_hash == "abc123"
    dm = RxVisionDataModule(
        source, DataLoadingConfig(img_size=16, num_workers=0, val_fraction=0.34), batch_size=2
    )
    dm.setup("fit")
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 16, 16)


def test_bad_data_is_named(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nowhere"):
        resolve_data(tmp_path / "nowhere")
    (tmp_path / "one" / "only-class").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "only-class" / "a.jpg")
    with pytest.raises(ConfigError, match="at least 2"):
        resolve_data(tmp_path / "one")
