"""The training data: a feature-store shard set or an image folder, split and batched.

``resolve_data`` turns what the user names (an ImageFolder directory, a local
``manifest.json`` of a shard set, or its ``s3://`` prefix) into a ``DataSource``;
``RxVisionDataModule`` splits it by content (``rxvision.data.splits``: train, validation
for checkpoint choice, test for the reported metrics) and serves DataLoaders with the
``rxvision.data.presets`` transforms. Every image is decoded by
``rxvision.data.imaging.load_image`` under the config's ``ImageSpec``, as scoring does.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from rxvision.data.feature_store import (
    MANIFEST,
    FeatureManifest,
    FeatureShardDataset,
    FeatureStore,
)
from rxvision.data.imaging import ImageSpec
from rxvision.data.presets import EvalPreset, TrainPreset, seed_worker_transform
from rxvision.data.splits import (
    TEST,
    TRAIN,
    VAL,
    ImageKey,
    SplitAssignment,
    assign_splits,
    require_trainable,
)
from rxvision.errors import ConfigError, DataValidationError, NotFound
from rxvision.home import Home
from rxvision.storage.s3 import parse_s3_uri
from rxvision.train.config import DataLoadingConfig
from rxvision.train.folder_source import ImageFolderDataset, folder_key, folder_rows
from rxvision.train.sampler import ResumableSampler

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

    def check_spec(self, spec: ImageSpec) -> None:
        """A shard set must hold pixels of ``spec`` (the model's contract)."""
        if self.manifest is not None:
            spec.require_same(self.manifest.spec, what=self.description)

    def row_paths(self) -> list[str]:
        """The relative path of every row (its file in the snapshot or folder)."""
        if self.manifest is not None:
            return [p for shard in self.manifest.shards for p in shard.paths]
        return list(self.paths)

    def content_keys(self, spec: ImageSpec) -> list[ImageKey]:
        """Each row's file sha256 and perceptual hash (stored in a shard set's manifest;
        computed from the files of an image folder)."""
        if self.manifest is not None:
            shas = [h for shard in self.manifest.shards for h in shard.sha256]
            phashes = [h for shard in self.manifest.shards for h in shard.phash]
            if not len(shas) == len(phashes) == len(self.labels):
                raise DataValidationError(
                    f"{self.description}: the manifest lacks content hashes for some rows; "
                    "rebuild the feature set"
                )
            return [
                ImageKey(sha, int(phash, 16), label)
                for sha, phash, label in zip(shas, phashes, self.labels, strict=True)
            ]
        assert self.folder is not None
        log.info("hashing %d images of %s for the content split", len(self.paths), self.folder)
        return [
            folder_key(self.folder / path, spec, label)
            for path, label in zip(self.paths, self.labels, strict=True)
        ]

    def dataset(
        self, indices: Sequence[int], transform: Transform, spec: ImageSpec
    ) -> Dataset[Any]:
        """The rows ``indices`` of this source, each decoded as ``spec`` and transformed."""
        if self.manifest is not None:
            shards = FeatureShardDataset(self.manifest, self.shard_paths, transform, indices)
            return cast("Dataset[Any]", shards)  # map-style: __len__ and __getitem__
        assert self.folder is not None
        rows = [(self.paths[i], self.labels[i]) for i in indices]
        return ImageFolderDataset(self.folder, rows, transform, spec)


def resolve_data(
    spec: str | Path, cache_dir: Path | None = None, *, exclude: Collection[str] = ()
) -> DataSource:
    """What ``--data`` names: an ImageFolder directory, a shard set's local
    ``manifest.json`` (or its folder), or a shard set in S3 (``s3://.../<key>[/manifest.json]``,
    downloaded once into ``cache_dir``). ``exclude``: paths of an image folder (relative to
    it, as the validation report names them) left out."""
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
        return _from_folder(path, exclude)
    raise NotFound(
        f"--data {text}: no such directory or manifest (expected an image folder, "
        f"a feature-store {MANIFEST}, or s3://bucket/prefix/<key>)"
    )


def _from_folder(root: Path, exclude: Collection[str] = ()) -> DataSource:
    rows = folder_rows(root, exclude)
    classes = sorted({label for _, label in rows})
    index = {c: i for i, c in enumerate(classes)}
    left_out = f" ({len(exclude)} invalid files left out)" if exclude else ""
    return _checked(
        DataSource(
            description=f"image folder {root}{left_out}",
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


def default_workers() -> int:
    """DataLoader workers when the config says null: leave one core to the training loop."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class RxVisionDataModule(pl.LightningDataModule):
    """Train/val/test loaders over a ``DataSource`` with the train and eval presets."""

    def __init__(
        self,
        source: DataSource,
        config: DataLoadingConfig,
        *,
        batch_size: int,
        world_size: int = 1,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.source = source
        self.config = config
        self.batch_size = batch_size
        self.world_size = world_size
        self.pin_memory = pin_memory
        self.seed = seed
        self.spec = config.image_spec
        self.num_workers = default_workers() if config.num_workers is None else config.num_workers
        source.check_spec(self.spec)
        # decided here, not in setup(): every DDP rank must see the same split
        self.assignment = split_source(source, config)
        self.train_indices = self.assignment.indices(TRAIN)
        self.val_indices = self.assignment.indices(VAL)
        self.test_indices = self.assignment.indices(TEST)
        self.train_set: Dataset[Any] | None = None
        self.val_set: Dataset[Any] | None = None
        self.test_set: Dataset[Any] | None = None
        self._resume_at: tuple[int, int] = (0, 0)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """A resumed run continues ``epoch`` after its first ``batches_done`` batches: the
        training loader skips them (same order, no image seen twice in the epoch)."""
        self._resume_at = (epoch, batches_done)

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
            rotate_limit=cfg.rotate_limit,
            rotate180_p=cfg.rotate180_p,
            scale_limit=cfg.scale_limit,
            color_p=cfg.color_p,
            brightness=cfg.brightness,
            contrast=cfg.contrast,
            saturation=cfg.saturation,
            hue=cfg.hue,
            cast_limit=cfg.cast_limit,
            blur_p=cfg.blur_p,
            seed=self.seed,
            # uint8 batches; RxVisionTrainer.on_after_batch_transfer normalizes them
            normalize_in_batch=True,
        )

    def eval_transform(self) -> Transform:
        """The validation, test and scoring preset."""
        return EvalPreset(img_size=self.config.img_size)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (cheap: images are read lazily by the loaders)."""
        if self.train_set is None:
            spec = self.spec
            self.train_set = self.source.dataset(self.train_indices, self.train_transform(), spec)
            self.val_set = self.source.dataset(self.val_indices, self.eval_transform(), spec)
            self.test_set = self.source.dataset(self.test_indices, self.eval_transform(), spec)

    def train_dataloader(self) -> DataLoader[Any]:
        """Batches in a seeded per-epoch order, split across ranks (``ResumableSampler``);
        the last partial batch is dropped (BatchNorm needs > 1 image)."""
        assert self.train_set is not None, "call setup() first"
        trainer = getattr(self, "trainer", None)
        sampler = ResumableSampler(
            len(self.train_indices),
            seed=self.seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=self.world_size,
            batch_size=self.batch_size,
            drop_last=self._drop_last(),
            repeats=self.config.epoch_repeats,
        )
        epoch, batches_done = self._resume_at
        sampler.set_epoch(epoch)
        if batches_done:
            sampler.skip_batches(batches_done)
        return self._loader(self.train_set, sampler=sampler, drop_last=self._drop_last())

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation batches in a fixed order (checkpoint choice only)."""
        assert self.val_set is not None, "call setup() first"
        return self._loader(self.val_set, drop_last=False)

    def test_dataloader(self) -> DataLoader[Any]:
        """Test batches in a fixed order: the reported metrics and the gates read these."""
        assert self.test_set is not None, "call setup() first"
        return self._loader(self.test_set, drop_last=False)

    def predict_dataloader(self) -> DataLoader[Any]:
        """The test images, for ``Trainer.predict``."""
        return self.test_dataloader()

    def _loader(
        self, dataset: Dataset[Any], *, drop_last: bool, sampler: ResumableSampler | None = None
    ) -> DataLoader[Any]:
        workers = self.num_workers
        extra: dict[str, Any] = {}
        if workers > 0:
            # persistent workers keep their decoded shard maps and forked state across epochs;
            # each worker reseeds its augmentation from its own torch seed (reproducible)
            extra = {
                "persistent_workers": True,
                "prefetch_factor": self.config.prefetch_factor,
                "worker_init_fn": seed_worker_transform,
            }
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=self.pin_memory,
            **extra,
        )

    def _per_rank(self) -> int:
        # the sampler pads every rank to ceil(n * repeats / world) images
        n = len(self.train_indices) * self.config.epoch_repeats
        return math.ceil(n / self.world_size)

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

    def references(self) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
        """Each class's reference photo (``rxvision.data.references``): the pixels of its
        first training row as the model sees them (the ``spec`` crop, not normalised) and
        where they came from (``path``, ``sha256``). Train split only: validation and test
        images must stay unseen by anything shipped with the model."""
        first: dict[str, int] = {}
        for index in self.train_indices:
            first.setdefault(self.classes[self.source.labels[index]], index)
        paths = self.source.row_paths()
        out: dict[str, tuple[np.ndarray, dict[str, str]]] = {}
        for name, index in first.items():
            pixels, _ = self.source.dataset([index], _identity, self.spec)[0]
            sha = self.assignment.keys[index].sha256 if self.assignment.keys else ""
            out[name] = (np.asarray(pixels), {"path": paths[index], "sha256": sha})
        return out

    def class_counts(self, split: str = TRAIN) -> dict[str, int]:
        """Images per class in ``split``."""
        indices = {TRAIN: self.train_indices, VAL: self.val_indices, TEST: self.test_indices}
        counts = np.bincount(
            [self.source.labels[i] for i in indices[split]], minlength=len(self.classes)
        )
        return {name: int(n) for name, n in zip(self.classes, counts, strict=True)}

    def split_record(self) -> dict[str, Any]:
        """Every row's path, sha256, content group and split: logged with the run, so the
        champion comparison can leave out images a model was trained on."""
        paths = self.source.row_paths()
        keys = self.assignment.keys
        return {
            "salt": self.config.split_salt,
            "val_fraction": self.config.val_fraction,
            "test_fraction": self.config.test_fraction,
            "near_duplicate_distance": self.config.near_duplicate_distance,
            "counts": self.assignment.counts(),
            "rows": [
                {
                    "path": path,
                    "class": self.classes[key.label],
                    "sha256": key.sha256,
                    "group": group,
                    "split": split,
                }
                for path, key, group, split in zip(
                    paths, keys, self.assignment.groups, self.assignment.splits, strict=True
                )
            ],
        }


def _identity(pixels: np.ndarray) -> np.ndarray:
    return pixels


def split_source(source: DataSource, config: DataLoadingConfig) -> SplitAssignment:
    """The content split of ``source`` under ``config`` (refused when a class would have
    no training image)."""
    keys = source.content_keys(config.image_spec)
    assignment = assign_splits(
        keys,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        salt=config.split_salt,
        max_distance=config.near_duplicate_distance,
    )
    require_trainable(assignment, source.labels, source.classes)
    return assignment
