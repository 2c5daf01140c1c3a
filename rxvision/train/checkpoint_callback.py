"""``StepCheckpoint``: full checkpoints on a step cadence and ``best.ckpt`` on the best
validation score, never with non-finite weights, published whole through a
``CheckpointStore`` (local or S3)."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

from rxvision.train.checkpoints import BEST, CheckpointStore, step_name

log = logging.getLogger(__name__)


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
