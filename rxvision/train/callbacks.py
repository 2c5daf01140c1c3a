"""Lightning callbacks: backbone freezing, telemetry and log-line progress (the step
checkpoints are in ``rxvision.train.checkpoint_callback``)."""

from __future__ import annotations

import logging
import math
import resource
import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

from rxvision.train.config import FineTuningConfig

log = logging.getLogger(__name__)


def unfreeze_schedule(n_blocks: int, fine_tuning: FineTuningConfig) -> list[int | None]:
    """The epoch from which each backbone block (input first) trains; None: never.

    ``gradual_unfreeze`` splits the blocks into ``unfreeze_stages`` groups and unfreezes
    them from the output side, one group per epoch from ``unfreeze_at_epoch``.
    ``freeze_backbone`` alone keeps every block frozen; neither trains all from epoch 0.
    """
    if fine_tuning.gradual_unfreeze:
        stages = min(fine_tuning.unfreeze_stages, n_blocks)
        per_stage = math.ceil(n_blocks / stages)
        schedule: list[int | None] = []
        for block in range(n_blocks):
            from_top = (n_blocks - 1 - block) // per_stage
            schedule.append(fine_tuning.unfreeze_at_epoch + from_top)
        return schedule
    if fine_tuning.freeze_backbone:
        return [None] * n_blocks
    return [0] * n_blocks


def set_trainable(module: nn.Module, trainable: bool) -> None:
    """Turn gradients of every parameter of ``module`` on or off."""
    for param in module.parameters():
        param.requires_grad_(trainable)


class BackboneFreezer(Callback):
    """Freeze backbone blocks and unfreeze them on schedule (``unfreeze_schedule``).

    Blocks that never train are frozen in ``setup``, before DDP wraps the model, so DDP
    leaves them out. Scheduled blocks are (un)frozen at each epoch start, and at the start
    of fit: a run resumed mid-epoch gets no ``on_train_epoch_start``. The module then uses
    DDP's dynamic mode.

    A frozen block is also held in eval mode, so its BatchNorm running statistics (and
    its dropout) stay as they are: ``requires_grad`` alone does not stop a BatchNorm in
    train mode from updating them. Lightning (2.6) never calls ``.train()`` at an epoch
    start; it restores each submodule's mode after validation, unless the LightningModule
    overrides ``on_validation_model_train`` (whose default is ``.train()``). So the eval
    mode is set when fit starts (after Lightning's check for modules in eval mode, which
    would warn), at each epoch start and again before every training batch, whatever ran
    in between. An unfrozen block goes back to train mode.
    """

    def __init__(self, blocks: list[nn.Module], fine_tuning: FineTuningConfig) -> None:
        self.blocks = blocks
        self.schedule = unfreeze_schedule(len(blocks), fine_tuning)
        self._frozen: set[int] = set()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Freeze the blocks that never train (their mode is set when training starts)."""
        for index, (block, start) in enumerate(zip(self.blocks, self.schedule, strict=True)):
            if start is None:
                set_trainable(block, False)
                self._frozen.add(index)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Apply the schedule of the current epoch (also after a mid-epoch resume)."""
        self.apply(trainer.current_epoch, verbose=False)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Apply the schedule for this epoch."""
        self.apply(trainer.current_epoch, verbose=trainer.is_global_zero)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Put frozen blocks back in eval mode, should anything have called ``.train()``."""
        self.hold_frozen_in_eval()

    def hold_frozen_in_eval(self) -> None:
        """Eval mode for every frozen block (cheap: it only sets flags)."""
        for index in self._frozen:
            self.blocks[index].eval()

    def apply(self, epoch: int, verbose: bool = True) -> int:
        """Set each scheduled block's state for ``epoch``; return how many blocks train.

        Frozen blocks (never-training ones included) are put in eval mode; a block that
        is unfrozen here goes back to train mode.
        """
        trainable = 0
        for index, (block, start) in enumerate(zip(self.blocks, self.schedule, strict=True)):
            if start is None:  # frozen in setup already; frozen here too when it was not
                set_trainable(block, False)
                self._frozen.add(index)
                continue
            on = epoch >= start
            was = any(p.requires_grad for p in block.parameters())
            if on != was:
                set_trainable(block, on)
                if on:
                    block.train()
            if on:
                self._frozen.discard(index)
            else:
                self._frozen.add(index)
            if on != was and verbose:
                log.info(
                    "epoch %d: backbone block %d %s", epoch, index, "unfrozen" if on else "frozen"
                )
            trainable += on
        self.hold_frozen_in_eval()
        return trainable


class TrainingTelemetry(Callback):
    """Per-step throughput, gradient-norm statistics and memory, logged as metrics.

    ``perf/samples_per_s`` counts images over all ranks; ``perf/cpu_rss_mb`` is the peak
    resident set of this process; ``perf/gpu_mem_mb`` the peak CUDA allocation.
    """

    WARMUP_BATCHES = 3  # left out of the throughput summary: allocator and loader start-up

    def __init__(self, world_size: int = 1, every_n_steps: int = 10) -> None:
        self.world_size = world_size
        self.every_n_steps = every_n_steps
        self._last: float | None = None
        self.rates: list[float] = []

    def samples_per_second(self) -> float | None:
        """Median images per second over the batches after the first few (None: too few)."""
        steady = self.rates[self.WARMUP_BATCHES :]
        return float(statistics.median(steady)) if steady else None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Start the clock on the first batch (loader start-up is not throughput)."""
        if self._last is None:
            self._last = time.perf_counter()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Gradient norm statistics (after AMP unscaling, before clipping)."""
        if trainer.global_step % self.every_n_steps != 0:
            return
        norms = [
            p.grad.detach().float().norm() for p in pl_module.parameters() if p.grad is not None
        ]
        if not norms:
            return
        stacked = torch.stack(norms)
        pl_module.log_dict(
            {
                "train/grad_norm": stacked.norm(),
                "train/grad_norm_max": stacked.max(),
                "train/grad_norm_mean": stacked.mean(),
            },
            on_step=True,
            on_epoch=False,
        )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Images per second over the last batch, and memory."""
        now = time.perf_counter()
        if self._last is None:
            self._last = now
            return
        seconds, self._last = now - self._last, now
        images = int(batch[1].shape[0]) * self.world_size
        rate = images / max(seconds, 1e-9)
        self.rates.append(rate)
        metrics = {
            "perf/samples_per_s": rate,
            "perf/cpu_rss_mb": peak_rss_mb(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            metrics["perf/gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=images)
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        if optimizer is not None:
            pl_module.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class LogProgress(Callback):
    """Log lines instead of a progress bar (for logs that are not a terminal)."""

    def __init__(self, every_n_steps: int, max_steps: int) -> None:
        self.every_n_steps = every_n_steps
        self.max_steps = max_steps
        self._began = time.monotonic()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """One line every ``every_n_steps`` optimizer steps."""
        step = trainer.global_step
        if step % self.every_n_steps or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        loss = metrics.get("train/loss")
        speed = metrics.get("perf/samples_per_s")
        log.info(
            "step %d/%d epoch %d loss %s %s images/s %.0f s",
            step,
            self.max_steps,
            trainer.current_epoch,
            f"{float(loss):.4f}" if loss is not None else "-",
            f"{float(speed):.1f}" if speed is not None else "-",
            time.monotonic() - self._began,
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One line per validation."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [
            f"{key.split('/')[1]} {float(metrics[key]):.4f}"
            for key in ("val/loss", "val/top1", "val/macro_f1")
            if key in metrics
        ]
        log.info("validation at step %d: %s", trainer.global_step, ", ".join(parts))
