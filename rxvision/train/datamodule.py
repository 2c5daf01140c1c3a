"""The training data: a feature-store shard set or an image folder, split and batched.

``resolve_data`` turns what the user names (an ImageFolder directory, a local
``manifest.json`` of a shard set, or its ``s3://`` prefix) into a ``DataSource``;
``RxVisionDataModule`` splits it (stratified, seeded) and serves DataLoaders with the
``rxvision.data.presets`` transforms.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from rxvision.data.feature_store import (
    MANIFEST,
    FeatureManifest,
    FeatureShardDataset,
    FeatureStore,
    list_image_folder,
)
from rxvision.data.presets import EvalPreset, TrainPreset
from rxvision.errors import ConfigError, NotFound
from rxvision.home import Home
from rxvision.storage.s3 import parse_s3_uri
from rxvision.train.config import DataLoadingConfig

log = logging.getLogger(__name__)

Transform = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class DataSource:
    """Labelled images from one place: an image folder or a local copy of a shard set."""

    description: str
    classes: list[str]
    labels: list[int]
    folder: Path | None = None
    paths: list[str] = field(default_factory=list)
    manifest: FeatureManifest | None = None
    shard_paths: list[Path] = field(default_factory=list)

    @property
    def snapshot_hash(self) -> str | None:
        """The content hash of the snapshot the shard set was built from (None: a folder)."""
        return self.manifest.snapshot_hash if self.manifest else None

    def dataset(
        self, indices: Sequence[int], transform: Transform, img_size: int | None = None
    ) -> Dataset[Any]:
        """The rows ``indices`` of this source, each transformed (to ``img_size``)."""
        if self.manifest is not None:
            shards = FeatureShardDataset(self.manifest, self.shard_paths, transform, indices)
            return cast("Dataset[Any]", shards)  # map-style: __len__ and __getitem__
        assert self.folder is not None
        rows = [(self.paths[i], self.labels[i]) for i in indices]
        return ImageFolderDataset(self.folder, rows, transform, draft_size=img_size)


class ImageFolderDataset(Dataset[tuple[Any, int]]):
    """Images decoded with PIL as RGB arrays, then transformed (the presets' input).

    With ``draft_size``, JPEGs are decoded at the smallest power-of-two reduction that
    still covers it (much faster for photos far larger than the training resolution).
    """

    def __init__(
        self,
        root: Path,
        rows: Sequence[tuple[str, int]],
        transform: Transform,
        draft_size: int | None = None,
    ) -> None:
        self.root = root
        self.rows = list(rows)
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.rows[index]
        with Image.open(self.root / path) as img:
            if self.draft_size:
                img.draft("RGB", (self.draft_size, self.draft_size))
            array = np.asarray(img.convert("RGB"))
        return self.transform(array), label


def resolve_data(spec: str | Path, cache_dir: Path | None = None) -> DataSource:
    """What ``--data`` names: an ImageFolder directory, a shard set's local
    ``manifest.json`` (or its folder), or a shard set in S3 (``s3://.../<key>[/manifest.json]``,
    downloaded once into ``cache_dir``)."""
    text = str(spec)
    cache = cache_dir or Home.from_env().cache_dir / "features"
    if text.startswith("s3://"):
        return _from_s3(text, cache)
    path = Path(text).expanduser()
    if path.is_file() and path.name.endswith(".json"):
        return _from_local_manifest(path)
    if path.is_dir() and (path / MANIFEST).is_file():
        return _from_local_manifest(path / MANIFEST)
    if path.is_dir():
        return _from_folder(path)
    raise NotFound(
        f"--data {text}: no such directory or manifest (expected an image folder, "
        f"a feature-store {MANIFEST}, or s3://bucket/prefix/<key>)"
    )


def _from_folder(root: Path) -> DataSource:
    rows = list_image_folder(root)
    classes = sorted({label for _, label in rows})
    index = {c: i for i, c in enumerate(classes)}
    return _checked(
        DataSource(
            description=f"image folder {root}",
            classes=classes,
            labels=[index[label] for _, label in rows],
            folder=root,
            paths=[p for p, _ in rows],
        )
    )


def _from_local_manifest(path: Path) -> DataSource:
    manifest = FeatureManifest.from_json(json.loads(path.read_text()))
    base = path.parent
    shard_paths = []
    for shard in manifest.shards:
        # the store's layout (<key>/attempts/<id>/shard-N.npy) or a flat download
        for candidate in (base / shard.key, base / Path(shard.key).name):
            if candidate.is_file():
                shard_paths.append(candidate)
                break
        else:
            raise NotFound(f"{path}: shard {shard.key} is not next to the manifest")
    return _manifest_source(manifest, shard_paths, f"feature set {path}")


def _from_s3(uri: str, cache_dir: Path) -> DataSource:
    prefix = uri.rstrip("/").removesuffix(f"/{MANIFEST}")
    parse_s3_uri(prefix)  # refuses a malformed URI with its own message
    root, _, key = prefix.rpartition("/")
    store = FeatureStore(root)
    manifest = store.manifest(key)
    if manifest is None:
        raise NotFound(f"--data {uri}: no committed shard set ({MANIFEST} missing)")
    paths = store.download(manifest, cache_dir)
    return _manifest_source(manifest, paths, f"feature set {prefix}")


def _manifest_source(manifest: FeatureManifest, paths: list[Path], what: str) -> DataSource:
    index = {c: i for i, c in enumerate(manifest.classes)}
    labels = [index[label] for shard in manifest.shards for label in shard.labels]
    return _checked(
        DataSource(
            description=what,
            classes=list(manifest.classes),
            labels=labels,
            manifest=manifest,
            shard_paths=paths,
        )
    )


def _checked(source: DataSource) -> DataSource:
    if len(source.classes) < 2:
        raise ConfigError(
            f"{source.description}: {len(source.classes)} class(es) found; "
            "training needs at least 2 class folders"
        )
    return source


def stratified_split(
    labels: Sequence[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Train and validation indices: ``val_fraction`` of each class (at least one image
    of every class with two or more), chosen by a seeded shuffle; both sorted."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(by_class):
        members = np.array(by_class[label])
        rng.shuffle(members)
        n_val = round(len(members) * val_fraction)
        n_val = min(max(n_val, 1 if len(members) > 1 else 0), len(members) - 1)
        val.extend(int(i) for i in members[:n_val])
        train.extend(int(i) for i in members[n_val:])
    return sorted(train), sorted(val)


def default_workers() -> int:
    """DataLoader workers when the config says null: leave one core to the training loop."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class RxVisionDataModule(pl.LightningDataModule):
    """Train/val loaders over a ``DataSource`` with the train and eval presets."""

    def __init__(
        self,
        source: DataSource,
        config: DataLoadingConfig,
        *,
        batch_size: int,
        world_size: int = 1,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.source = source
        self.config = config
        self.batch_size = batch_size
        self.world_size = world_size
        self.pin_memory = pin_memory
        self.num_workers = default_workers() if config.num_workers is None else config.num_workers
        # decided here, not in setup(): every DDP rank must see the same split
        self.train_indices, self.val_indices = stratified_split(
            source.labels, config.val_fraction, config.split_seed
        )
        self.train_set: Dataset[Any] | None = None
        self.val_set: Dataset[Any] | None = None

    @property
    def classes(self) -> list[str]:
        """Class names, in label order."""
        return self.source.classes

    def train_transform(self) -> Transform:
        """The training preset (augmenting unless ``data.augment`` is false)."""
        cfg = self.config
        if not cfg.augment:
            return EvalPreset(img_size=cfg.img_size)
        return TrainPreset(
            img_size=cfg.img_size,
            rotate90_p=cfg.rotate90_p,
            flip_p=cfg.flip_p,
            affine_p=cfg.affine_p,
        )

    def eval_transform(self) -> Transform:
        """The validation and scoring preset."""
        return EvalPreset(img_size=self.config.img_size)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (cheap: images are read lazily by the loaders)."""
        if self.train_set is None:
            size = self.config.img_size
            self.train_set = self.source.dataset(self.train_indices, self.train_transform(), size)
            self.val_set = self.source.dataset(self.val_indices, self.eval_transform(), size)

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled batches; the last partial batch is dropped (BatchNorm needs > 1 image)."""
        assert self.train_set is not None, "call setup() first"
        return self._loader(self.train_set, shuffle=True, drop_last=self._drop_last())

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation batches in a fixed order."""
        assert self.val_set is not None, "call setup() first"
        return self._loader(self.val_set, shuffle=False, drop_last=False)

    def predict_dataloader(self) -> DataLoader[Any]:
        """The validation images, for ``Trainer.predict``."""
        return self.val_dataloader()

    def _loader(self, dataset: Dataset[Any], *, shuffle: bool, drop_last: bool) -> DataLoader[Any]:
        workers = self.num_workers
        extra: dict[str, Any] = {}
        if workers > 0:
            # persistent workers keep their decoded shard maps and forked state across epochs
            extra = {"persistent_workers": True, "prefetch_factor": self.config.prefetch_factor}
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=self.pin_memory,
            **extra,
        )

    def _per_rank(self) -> int:
        # Lightning's DistributedSampler pads every rank to ceil(n / world) images
        return math.ceil(len(self.train_indices) / self.world_size)

    def _drop_last(self) -> bool:
        return self._per_rank() > self.batch_size

    def steps_per_epoch(self, accumulate_grad_batches: int = 1) -> int:
        """Optimizer steps in one epoch (the same on every rank).

        The loader drops the last partial batch when there is more than one; a trailing
        partial accumulation still makes an optimizer step (Lightning's rule).
        """
        per_rank = self._per_rank()
        batches = per_rank // self.batch_size if self._drop_last() else 1
        return max(1, math.ceil(batches / accumulate_grad_batches))

    def class_counts(self) -> dict[str, int]:
        """Images per class in the training split."""
        counts = np.bincount(
            [self.source.labels[i] for i in self.train_indices], minlength=len(self.classes)
        )
        return {name: int(n) for name, n in zip(self.classes, counts, strict=True)}
