"""Lightning callbacks: backbone freezing, step checkpoints, telemetry and log-line progress."""

from __future__ import annotations

import copy
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

from rxvision.train.checkpoints import BEST, CheckpointStore, step_name
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


class StepCheckpoint(Callback):
    """Full checkpoints every ``every_n_steps`` optimizer steps (at each epoch end when
    ``every_n_steps`` is off) and at the end of training, plus ``best.ckpt`` on the best
    ``monitor`` value.

    ``best.ckpt`` is kept in memory when the metric improves and written just before the
    next full checkpoint (and at the end, or when training fails): the best score in a
    full checkpoint's state is always the one of the ``best.ckpt`` beside it, and a run
    whose metric improves (or ties) at every short epoch does not write ~50 MB per
    epoch. Writing a checkpoint at every epoch end of a 7-step epoch took 20% of a CPU
    run's time (profiled, issue 14); the step cadence alone bounds the work a crash
    loses.

    Every rank calls ``trainer.save_checkpoint`` (it synchronises the ranks); only global
    rank 0 writes and publishes the file.
    """

    def __init__(
        self,
        store: CheckpointStore,
        *,
        every_n_steps: int | None,
        keep_last: int,
        monitor: str = "val/top1",
    ) -> None:
        self.store = store
        self.every_n_steps = every_n_steps
        self.keep_last = keep_last
        self.monitor = monitor
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.last_saved_step: int | None = None
        self.last_uri: str | None = None
        # the best weights not written yet (a copy: the module goes on training)
        self._pending_best: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        """One key per checkpointed store (stable across resumes)."""
        return "StepCheckpoint"

    def state_dict(self) -> dict[str, Any]:
        """The best score so far (kept across resumes)."""
        return {"best_score": self.best_score, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the best score."""
        self.best_score = state_dict.get("best_score")
        self.best_step = state_dict.get("best_step")

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Save every ``every_n_steps`` optimizer steps."""
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.save(trainer, step_name(step))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save at the end of each epoch when there is no step cadence."""
        if not self.every_n_steps:
            self.save(trainer, step_name(trainer.global_step))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the final state when it was not saved yet, and the best weights."""
        self.save(trainer, step_name(trainer.global_step))
        self._flush_best(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Training failed: write the best weights held in memory, if any."""
        try:
            self._flush_best(trainer)
        except Exception:  # the original failure is the one to report
            log.exception("could not write %s after training failed", BEST)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the weights as ``best.ckpt``, to write with the next checkpoint, when the
        monitored metric improved or tied."""
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        score = float(value)
        if self.best_score is not None and score < self.best_score:  # ties: the later one
            return
        if not finite_weights(trainer.lightning_module):
            log.error("not keeping step %d as the best: non-finite weights", trainer.global_step)
            return
        # weights (and loop state) only: a model to export, not a point to resume from;
        # copied, since training goes on changing the module's tensors
        # (Lightning's own dump, as trainer.save_checkpoint(weights_only=True) writes it)
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=True)
        self._pending_best = copy.deepcopy(checkpoint)
        self.best_score, self.best_step = score, trainer.global_step

    def save(self, trainer: pl.Trainer, name: str) -> None:
        """Save a step checkpoint unless this step was saved already; prune old ones
        (not after a refused write: the older checkpoints are the good ones). The best
        weights held in memory are written first."""
        if trainer.global_step == self.last_saved_step or trainer.global_step == 0:
            return
        self._flush_best(trainer)
        uri = self._write(trainer, name)
        if uri is None:
            return
        self.last_saved_step, self.last_uri = trainer.global_step, uri
        if trainer.is_global_zero:
            self.store.prune(self.keep_last)

    def _flush_best(self, trainer: pl.Trainer) -> None:
        """Write the best weights held in memory as ``best.ckpt``."""
        checkpoint, self._pending_best = self._pending_best, None
        if checkpoint is None:
            return
        temp = self.store.temp_path(BEST)
        trainer.strategy.save_checkpoint(checkpoint, temp)
        if trainer.is_global_zero:
            self.store.publish(temp, BEST)

    def _write(self, trainer: pl.Trainer, name: str) -> str | None:
        """Write and publish checkpoint ``name``; None (nothing written) when a weight is
        NaN or infinite: a diverged model must never replace the last good checkpoint.
        Every rank decides alike (DDP keeps the weights identical)."""
        if not finite_weights(trainer.lightning_module):
            log.error(
                "not writing checkpoint %s at step %d: the model has non-finite weights; "
                "the last good checkpoint stays %s",
                name,
                trainer.global_step,
                self.last_uri or "the newest one in " + self.store.uri,
            )
            return None
        temp = self.store.temp_path(name)
        trainer.save_checkpoint(temp, weights_only=False)
        uri = f"{self.store.uri}/{name}"
        if trainer.is_global_zero:
            uri = self.store.publish(temp, name)
        return uri


def finite_weights(module: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``module`` is finite (one
    device sync, whatever the number of tensors)."""
    checks = [
        torch.isfinite(t.detach()).all()
        for t in module.state_dict().values()
        if isinstance(t, torch.Tensor) and t.is_floating_point()
    ]
    return bool(torch.stack(checks).all()) if checks else True


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
