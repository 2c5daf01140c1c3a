"""The training data as Lightning batches: a ``DataSource`` split and batched.

``RxVisionDataModule`` splits its source by content (``rxvision.data.splits``: train,
validation for checkpoint choice, test for the reported metrics) and serves DataLoaders
with the ``rxvision.data.presets`` transforms. Every image is decoded by
``rxvision.data.imaging.load_image`` under the config's ``ImageSpec``, as scoring does.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from rxvision.data.collate import collate_channels_last
from rxvision.data.presets import EvalPreset, TrainPreset, seed_worker_transform
from rxvision.data.splits import (
    TEST,
    TRAIN,
    VAL,
)
from rxvision.train.config import DataLoadingConfig
from rxvision.train.data_source import DataSource, Transform, split_source
from rxvision.train.sampler import ResumableSampler

log = logging.getLogger(__name__)


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
        # uint8 HWC crops stacked as a channels-last batch: a contiguous copy per image, and
        # the memory format the model converts to anyway
        return self._loader(
            self.train_set,
            sampler=sampler,
            drop_last=self._drop_last(),
            collate=collate_channels_last,
        )

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
        self,
        dataset: Dataset[Any],
        *,
        drop_last: bool,
        sampler: ResumableSampler | None = None,
        collate: Callable[[list[Any]], Any] | None = None,
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
            collate_fn=collate,
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
