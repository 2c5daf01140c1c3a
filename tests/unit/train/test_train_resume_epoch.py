"""A run resumed from a checkpoint saved mid-epoch continues that epoch's sample order.

Real ``pl.Trainer`` fits on CPU, compared batch by batch (label + hash of the image
tensor of every sample) with an uninterrupted run of the same seed: after the resume no
image of the interrupted epoch is seen twice, none is skipped, and every later batch is
the one the uninterrupted run had at the same (epoch, batch_idx).

The checkpoint is written in ``on_train_batch_end``, as ``StepCheckpoint`` does every
``every_n_steps``. Not with ``trainer.save_checkpoint`` after ``fit`` stopped at
``max_steps``: by then Lightning's ``FitLoop.on_advance_end`` has counted the cut epoch
as done, and a fit resumed from such a checkpoint starts the next epoch (at the saved
batch index), whatever the sampler does.
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from rxvision.train.config import DataLoadingConfig
from rxvision.train.data_source import resolve_data
from rxvision.train.datamodule import RxVisionDataModule
from rxvision.train.module import RxVisionTrainer
from rxvision.train.resume import resume_progress
from rxvision.train.sampler import ResumableSampler

pytestmark = [
    pytest.mark.unit,
    # Lightning's warning that the loader is not ``_Stateful``: the sampler skips instead
    pytest.mark.filterwarnings("ignore:.*resuming from a checkpoint that ended"),
]

SEED = 0
BATCH = 2
EPOCHS = 3
DONE_IN_EPOCH_1 = 3  # batches of epoch 1 trained before the interruption

Batch = tuple[int, int, tuple[str, ...]]  # (epoch, batch_idx, one fingerprint per sample)


class BatchRecorder(pl.Callback):
    """Every training batch as (epoch, batch_idx, label + image hash of each sample)."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        images, labels = batch
        prints = tuple(
            f"{int(label)}:{hashlib.sha256(image.numpy().tobytes()).hexdigest()[:16]}"
            for image, label in zip(images, labels, strict=True)
        )
        self.batches.append((trainer.current_epoch, batch_idx, prints))


class SaveAtStep(pl.Callback):
    """``trainer.save_checkpoint(path)`` after the optimizer step ``step`` (mid-epoch)."""

    def __init__(self, step: int, path: Path) -> None:
        self.step = step
        self.path = path

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def _datamodule(folder: Path) -> RxVisionDataModule:
    config = DataLoadingConfig(
        img_size=24,  # the size the fixture writes
        num_workers=0,
        augment=False,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    return RxVisionDataModule(resolve_data(folder), config, batch_size=BATCH, seed=SEED)


def _fit(
    datamodule: RxVisionDataModule,
    backbone: nn.Module,
    *,
    max_steps: int,
    ckpt_path: Path | None = None,
    callbacks: tuple[pl.Callback, ...] = (),
) -> tuple[list[Batch], RxVisionTrainer, pl.Trainer]:
    """One fit of a fresh module (a copy of ``backbone``) from seed ``SEED``."""
    pl.seed_everything(SEED, verbose=False)
    module = RxVisionTrainer(
        copy.deepcopy(backbone),
        8,
        datamodule.classes,
        steps_per_epoch=datamodule.steps_per_epoch(),
    )
    recorder = BatchRecorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        callbacks=[recorder, *callbacks],
    )
    trainer.fit(
        module,
        datamodule=datamodule,
        ckpt_path=str(ckpt_path) if ckpt_path else None,
        weights_only=True,
    )
    return recorder.batches, module, trainer


def _samples(batches: list[Batch], epoch: int) -> list[str]:
    return [p for e, _, prints in batches if e == epoch for p in prints]


def _interrupted_run(
    folder: Path, backbone: nn.Module, ckpt: Path
) -> tuple[list[Batch], RxVisionTrainer, list[Batch], int]:
    """Run A (uninterrupted, ``EPOCHS`` epochs) and the first part of run B (stopped
    after ``DONE_IN_EPOCH_1`` batches of epoch 1, checkpoint at ``ckpt``)."""
    steps_per_epoch = _datamodule(folder).steps_per_epoch()
    assert steps_per_epoch > DONE_IN_EPOCH_1 + 1, "the resumed epoch needs batches left"
    whole, whole_module, trainer = _fit(
        _datamodule(folder), backbone, max_steps=EPOCHS * steps_per_epoch
    )
    assert trainer.global_step == EPOCHS * steps_per_epoch
    assert [(e, i) for e, i, _ in whole] == [
        (e, i) for e in range(EPOCHS) for i in range(steps_per_epoch)
    ]
    # the fingerprints tell the images apart, and each epoch shows each image at most once
    for epoch in range(EPOCHS):
        assert len(set(_samples(whole, epoch))) == steps_per_epoch * BATCH

    stop = steps_per_epoch + DONE_IN_EPOCH_1
    before, _, _ = _fit(
        _datamodule(folder), backbone, max_steps=stop, callbacks=(SaveAtStep(stop, ckpt),)
    )
    assert ckpt.is_file()
    assert before == whole[:stop]  # same seed, same batches up to the interruption
    return whole, whole_module, before, steps_per_epoch


def test_resume_continues_the_interrupted_epoch(
    image_folder: Path, tiny_backbone: nn.Module
) -> None:
    ckpt = image_folder.parent / "mid-epoch.ckpt"
    whole, whole_module, before, steps_per_epoch = _interrupted_run(
        image_folder, tiny_backbone, ckpt
    )
    assert resume_progress(ckpt) == (1, DONE_IN_EPOCH_1)

    datamodule = _datamodule(image_folder)
    datamodule.resume_at(*resume_progress(ckpt))
    after, module, trainer = _fit(
        datamodule, tiny_backbone, max_steps=EPOCHS * steps_per_epoch, ckpt_path=ckpt
    )
    # the loader skips the done batches but still reports the whole epoch's length
    loader = trainer.train_dataloader
    assert loader is not None and isinstance(loader.sampler, ResumableSampler)
    assert len(loader) == steps_per_epoch

    # the resumed part: epoch 1 from batch DONE_IN_EPOCH_1 on, then epoch 2, batch for
    # batch the uninterrupted run's, and the run stops at the same step
    assert trainer.global_step == EPOCHS * steps_per_epoch
    assert after == whole[len(before) :]
    assert after[0][:2] == (1, DONE_IN_EPOCH_1)

    # epoch 1, before and after the interruption: every image of the epoch exactly once
    epoch_1 = _samples(before, 1) + _samples(after, 1)
    assert Counter(epoch_1) == Counter(_samples(whole, 1))
    assert len(epoch_1) == len(set(epoch_1)) == steps_per_epoch * BATCH

    # same data in the same order, optimizer and scheduler restored: the same weights
    for name, value in whole_module.state_dict().items():
        torch.testing.assert_close(module.state_dict()[name], value, msg=name)


def test_resume_without_skipping_repeats_the_done_batches(
    image_folder: Path, tiny_backbone: nn.Module
) -> None:
    """The old behaviour (no ``resume_at``): Lightning resumes at batch_idx
    DONE_IN_EPOCH_1, but the loader starts the epoch's order from the beginning, so the
    done batches come again and the epoch's last ones are never seen."""
    ckpt = image_folder.parent / "mid-epoch.ckpt"
    whole, _, before, steps_per_epoch = _interrupted_run(image_folder, tiny_backbone, ckpt)

    after, _, trainer = _fit(
        _datamodule(image_folder),
        tiny_backbone,
        max_steps=EPOCHS * steps_per_epoch,
        ckpt_path=ckpt,
    )
    assert trainer.global_step == EPOCHS * steps_per_epoch
    resumed_1 = [b for b in after if b[0] == 1]
    assert [i for _, i, _ in resumed_1] == list(range(DONE_IN_EPOCH_1, steps_per_epoch))
    # the loader starts epoch 1's order over: the resumed batches are its first ones
    first_of_epoch_1 = [p for e, _, p in whole if e == 1][: len(resumed_1)]
    assert [p for _, _, p in resumed_1] == first_of_epoch_1
    epoch_1 = _samples(before, 1) + _samples(after, 1)
    assert len(epoch_1) > len(set(epoch_1))  # images seen twice in epoch 1
    assert set(_samples(whole, 1)) - set(epoch_1)  # and images never seen in it
