"""``StepCheckpoint`` on real ``pl.Trainer`` fits of a tiny model, local checkpoint store.

The validation score follows a script (one value per epoch), so the best step is known:
``best.ckpt`` must hold the weights of that step (not the weights when it was written),
be written at most once per full checkpoint, and still be written when training fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightning_helpers import cpu_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rxvision.train.checkpoint_callback import StepCheckpoint
from rxvision.train.checkpoints import BEST, CheckpointStore, step_name

pytestmark = pytest.mark.unit

BATCH = 4


class Scripted(pl.LightningModule):
    """A linear model trained for real; ``val/top1`` of epoch k is ``scores[k]``."""

    def __init__(self, scores: list[float], fail_at_step: int | None = None) -> None:
        super().__init__()
        self.net = nn.Linear(8, 2)
        self.scores = scores
        self.fail_at_step = fail_at_step

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.fail_at_step is not None and self.global_step == self.fail_at_step:
            raise RuntimeError("the worker died")
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/top1", self.scores[self.current_epoch], batch_size=BATCH)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


class CountingStore(CheckpointStore):
    """The real local store, counting what it publishes."""

    published: list[str]

    def publish(self, temp: Path, name: str) -> str:
        self.published.append(name)
        return super().publish(temp, name)


def loader(steps: int) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(steps * BATCH, 8, generator=generator)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=BATCH)


def fit(
    tmp_path: Path,
    module: Scripted,
    *,
    steps_per_epoch: int,
    max_steps: int,
    every_n_steps: int | None,
) -> tuple[CountingStore, StepCheckpoint]:
    store = CountingStore(str(tmp_path / "ckpt"), "run-s", staging_root=tmp_path / "staging")
    store.published = []
    callback = StepCheckpoint(store, every_n_steps=every_n_steps, keep_last=100)
    trainer = cpu_trainer([callback], max_steps, tmp_path / "pl")
    trainer.fit(module, loader(steps_per_epoch), loader(1))
    return store, callback


def load(store: CheckpointStore, name: str) -> dict[str, Any]:
    data: dict[str, Any] = torch.load(store.fetch(name), map_location="cpu", weights_only=True)
    return data


def test_best_holds_the_weights_of_its_step_not_of_its_writing(tmp_path: Path) -> None:
    module = Scripted([0.2, 0.6, 0.4, 0.5])
    store, callback = fit(tmp_path, module, steps_per_epoch=3, max_steps=12, every_n_steps=3)
    assert callback.best_step == 6
    best, at_best, final = load(store, BEST), load(store, step_name(6)), load(store, step_name(12))
    assert best["global_step"] == 6
    for key, value in best["state_dict"].items():
        assert torch.equal(value, at_best["state_dict"][key]), key
    assert not torch.equal(best["state_dict"]["net.weight"], final["state_dict"]["net.weight"])
    assert "optimizer_states" not in best  # weights only: a model, not a resume point


def test_with_a_step_cadence_epochs_end_without_a_checkpoint(tmp_path: Path) -> None:
    module = Scripted([0.1] * 4)
    store, _ = fit(tmp_path, module, steps_per_epoch=3, max_steps=12, every_n_steps=5)
    assert [ref.step for ref in store.list_steps()] == [5, 10, 12]


def test_without_a_step_cadence_each_epoch_ends_with_one(tmp_path: Path) -> None:
    module = Scripted([0.1] * 4)
    store, _ = fit(tmp_path, module, steps_per_epoch=3, max_steps=12, every_n_steps=None)
    assert [ref.step for ref in store.list_steps()] == [3, 6, 9, 12]


def test_a_best_that_ties_every_epoch_is_written_once_per_checkpoint(tmp_path: Path) -> None:
    module = Scripted([0.5] * 8)
    store, callback = fit(tmp_path, module, steps_per_epoch=2, max_steps=16, every_n_steps=8)
    # ties keep the later step. Written with the checkpoints of steps 8 and 16 (the best
    # of step 14: step 16's validation comes after its checkpoint) and at the end (step
    # 16's): 3 writes, not one per epoch (8)
    assert callback.best_step == 16
    assert store.published.count(BEST) == 3
    assert load(store, BEST)["global_step"] == 16
    # step 8's checkpoint comes before step 8's validation: its state records the best of
    # step 6, the weights written as best.ckpt just before it
    assert load(store, step_name(8))["callbacks"]["StepCheckpoint"]["best_step"] == 6


def test_the_best_is_written_when_training_fails(tmp_path: Path) -> None:
    module = Scripted([0.3, 0.9, 0.1], fail_at_step=7)
    with pytest.raises(RuntimeError, match="the worker died"):
        fit(tmp_path, module, steps_per_epoch=3, max_steps=30, every_n_steps=100)
    assert store_steps(tmp_path) == []  # no full checkpoint was due
    best = torch.load(tmp_path / "ckpt" / "run-s" / BEST, map_location="cpu", weights_only=True)
    assert best["global_step"] == 6


def store_steps(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "ckpt" / "run-s").glob("step-*"))
