"""The content split and the loaders of the DataModule."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from rxvision.data.feature_store import FeatureManifest, ShardRecord
from rxvision.data.imaging import ImageSpec, PreprocessingMismatch, difference_hash, load_image
from rxvision.train.config import DataLoadingConfig
from rxvision.train.data_source import resolve_data
from rxvision.train.datamodule import RxVisionDataModule

pytestmark = pytest.mark.unit


def test_image_folder_source_and_loaders(image_folder: Path) -> None:
    source = resolve_data(image_folder)
    assert source.classes == ["class-0", "class-1", "class-2"]
    assert source.snapshot_hash is None
    config = DataLoadingConfig(img_size=16, val_fraction=0.25, test_fraction=0.25, num_workers=0)
    dm = RxVisionDataModule(source, config, batch_size=4)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    # training batches leave the loader as uint8: the module normalizes them on device
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    val_images, _ = next(iter(dm.val_dataloader()))
    assert val_images.dtype == torch.float32
    split = [dm.train_indices, dm.val_indices, dm.test_indices]
    assert sorted(i for part in split for i in part) == list(range(18))
    assert all(part for part in split)
    val_batches = list(dm.val_dataloader())
    assert sum(len(b[1]) for b in val_batches) == len(dm.val_indices)
    test_batches = list(dm.test_dataloader())
    assert sum(len(b[1]) for b in test_batches) == len(dm.test_indices)
    counts = dm.class_counts()
    assert sum(counts.values()) == len(dm.train_indices) and min(counts.values()) >= 1
    record = dm.split_record()
    assert [r["split"] for r in record["rows"]] == dm.assignment.splits
    assert record["rows"][0]["path"] == "class-0/img-000.jpg"


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
    config = DataLoadingConfig(img_size=24)
    dm = RxVisionDataModule(source, config, batch_size=batch, world_size=world)
    dm.train_indices = list(range(n_train))
    assert dm.steps_per_epoch(accumulate) == steps


def test_epoch_repeats_multiply_the_epoch(image_folder: Path) -> None:
    source = resolve_data(image_folder)
    config = DataLoadingConfig(img_size=16, val_fraction=0.25, test_fraction=0.25, num_workers=0)
    once = RxVisionDataModule(source, config, batch_size=2)
    thrice = RxVisionDataModule(
        source, config.model_copy(update={"epoch_repeats": 3}), batch_size=2
    )
    for dm in (once, thrice):
        dm.setup("fit")
    n = len(once.train_indices)
    assert thrice.steps_per_epoch() == (3 * n) // 2 and once.steps_per_epoch() == n // 2
    labels = [int(y) for _, batch in thrice.train_dataloader() for y in batch]
    assert len(labels) == thrice.steps_per_epoch() * 2 and len(
        thrice.train_dataloader()
    ) * 2 == len(labels)


def test_local_feature_manifest(tmp_path: Path) -> None:
    shard_dir = tmp_path / "features" / "key1"
    (shard_dir / "attempts" / "a1").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 255, size=(12, 16, 16, 3), dtype=np.uint8)
    np.save(shard_dir / "attempts" / "a1" / "shard-00000.npy", pixels)
    labels = ["x", "y"] * 6
    shas = [f"{i:064x}" for i in range(12)]
    phashes = [f"{difference_hash(p):016x}" for p in pixels]
    paths = [f"p{i}" for i in range(12)]
    record = ShardRecord("attempts/a1/shard-00000.npy", paths, labels, shas, phashes)
    manifest = FeatureManifest(
        key="key1",
        snapshot_hash="abc123",
        config={"spec": ImageSpec(16).to_dict(), "shard_size": 1000},
        classes=["x", "y"],
        images=12,
        shards=[record],
        created="now",
        attempt="a1",
    )
    (shard_dir / "manifest.json").write_text(json.dumps(asdict(manifest)))
    source = resolve_data(shard_dir)  # the folder or the file itself
    assert resolve_data(shard_dir / "manifest.json").labels == source.labels == [0, 1] * 6
    assert source.snapshot_hash == "abc123"
    config = DataLoadingConfig(img_size=16, num_workers=0, val_fraction=0.25, test_fraction=0.25)
    dm = RxVisionDataModule(source, config, batch_size=2)
    dm.setup("fit")
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 16, 16)
    # pixels stored at 16 px are refused for a model that expects 24 px
    with pytest.raises(PreprocessingMismatch, match=r"16 px bilinear.*expects 24 px"):
        RxVisionDataModule(source, DataLoadingConfig(img_size=24), batch_size=2)


def test_a_local_manifest_reads_an_earlier_sets_shard_beside_it(tmp_path: Path) -> None:
    # a copy of the store's layout: key2 reads rows 3 and 1 of key1's shard in place
    root = tmp_path / "features"
    (root / "key1" / "attempts" / "a1").mkdir(parents=True)
    (root / "key2").mkdir()
    pixels = np.stack([np.full((16, 16, 3), 10 * i, np.uint8) for i in range(4)])
    np.save(root / "key1" / "attempts" / "a1" / "shard-00000.npy", pixels)
    record = ShardRecord(
        "attempts/a1/shard-00000.npy", ["p3", "p1"], ["y", "x"], ["3" * 64, "1" * 64],
        ["0" * 16, "1" * 16], set_key="key1", rows=[3, 1],
    )  # fmt: skip
    manifest = FeatureManifest(
        "key2", "abc", {"spec": ImageSpec(16).to_dict()}, ["x", "y"], 2, [record], "now", "a2"
    )
    (root / "key2" / "manifest.json").write_text(json.dumps(asdict(manifest)))
    source = resolve_data(root / "key2")
    assert source.labels == [1, 0] and source.row_paths() == ["p3", "p1"]
    rows = source.dataset([0, 1], transform=None, spec=ImageSpec(16))  # type: ignore[arg-type]
    assert [int(rows[i][0][0, 0, 0]) for i in range(2)] == [30, 10]


def test_an_image_gives_the_same_tensor_in_training_and_in_scoring(image_folder: Path) -> None:
    from rxvision.serving.model_contract import LoadedModel

    source = resolve_data(image_folder)
    config = DataLoadingConfig(img_size=20, num_workers=0, val_fraction=0.25, test_fraction=0.25)
    dm = RxVisionDataModule(source, config, batch_size=4)
    dm.setup("fit")
    assert dm.test_set is not None
    row = dm.test_indices[0]
    trained, _ = dm.test_set[0]
    loaded = LoadedModel(None, source.classes, config.image_spec, None)  # type: ignore[arg-type]
    scored = loaded.load((image_folder / source.paths[row]).read_bytes())
    assert torch.equal(trained, scored)
    pixels = load_image(image_folder / source.paths[row], config.image_spec)
    assert pixels.shape == (20, 20, 3)
