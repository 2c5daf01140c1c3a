"""Freezing and unfreezing the backbone on schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from rxvision.train.backbones import build_backbone
from rxvision.train.callbacks import BackboneFreezer, unfreeze_schedule
from rxvision.train.config import FineTuningConfig
from rxvision.train.module import RxVisionTrainer

pytestmark = pytest.mark.unit


def test_schedule_without_fine_tuning_trains_everything() -> None:
    assert unfreeze_schedule(5, FineTuningConfig()) == [0, 0, 0, 0, 0]


def test_freeze_backbone_keeps_every_block_frozen() -> None:
    assert unfreeze_schedule(3, FineTuningConfig(freeze_backbone=True)) == [None, None, None]


def test_gradual_unfreeze_goes_from_the_top() -> None:
    ft = FineTuningConfig(gradual_unfreeze=True, unfreeze_at_epoch=2, unfreeze_stages=3)
    # 5 blocks in 3 stages of 2: the top two at epoch 2, the next two at 3, the stem at 4
    assert unfreeze_schedule(5, ft) == [4, 3, 3, 2, 2]
    single = FineTuningConfig(gradual_unfreeze=True, unfreeze_at_epoch=1)
    assert unfreeze_schedule(5, single) == [1, 1, 1, 1, 1]


def _grads_after_one_step(module: RxVisionTrainer) -> tuple[bool, bool]:
    module.zero_grad()
    loss = module.training_step((torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])), 0)
    loss.backward()
    backbone = any(p.grad is not None for p in module.backbone.parameters())
    head = all(p.grad is not None for p in module.head.parameters())
    return backbone, head


@pytest.fixture
def resnet() -> tuple[RxVisionTrainer, list[torch.nn.Module]]:
    backbone = build_backbone("resnet18")
    module = RxVisionTrainer(backbone.net, backbone.num_features, ["a", "b"])
    return module, backbone.blocks()


def test_frozen_backbone_gets_no_gradient(
    resnet: tuple[RxVisionTrainer, list[torch.nn.Module]],
) -> None:
    module, blocks = resnet
    freezer = BackboneFreezer(blocks, FineTuningConfig(freeze_backbone=True))
    freezer.setup(None, module, "fit")  # type: ignore[arg-type]
    assert _grads_after_one_step(module) == (False, True)


def test_gradual_unfreeze_applies_per_epoch_and_after_resume(
    resnet: tuple[RxVisionTrainer, list[torch.nn.Module]],
) -> None:
    module, blocks = resnet
    ft = FineTuningConfig(gradual_unfreeze=True, unfreeze_at_epoch=1, unfreeze_stages=5)
    freezer = BackboneFreezer(blocks, ft)
    freezer.setup(None, module, "fit")  # type: ignore[arg-type]
    assert freezer.apply(0) == 0
    assert _grads_after_one_step(module) == (False, True)
    assert freezer.apply(1) == 1  # layer4 only
    assert all(p.requires_grad for p in blocks[-1].parameters())
    assert not any(p.requires_grad for p in blocks[0].parameters())
    # a run resumed at epoch 7 gets the whole backbone back, whatever it saw before
    assert BackboneFreezer(blocks, ft).apply(7) == 5
    assert _grads_after_one_step(module) == (True, True)


# --- frozen blocks keep their BatchNorm statistics, through a real Trainer ---------------


class _TrainAfterValidation(RxVisionTrainer):
    """A module whose validation ends with ``.train()`` on the whole model (the body of
    Lightning's default hook, which the loop calls once it is overridden)."""

    def on_validation_model_train(self) -> None:
        self.trainer.model.train()


def _tiny_bn_backbone() -> tuple[torch.nn.Module, list[torch.nn.Module]]:
    def block(cin: int, cout: int) -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()
        )

    net = torch.nn.Sequential(
        block(3, 4), block(4, 8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    return net, [net[0], net[1]]


def _bn(block: torch.nn.Module) -> torch.nn.BatchNorm2d:
    bn = block[1]
    assert isinstance(bn, torch.nn.BatchNorm2d)
    return bn


def _fit(module: RxVisionTrainer, freezer: BackboneFreezer, epochs: int, root: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(16, 3, 8, 8, generator=generator) * 3 + 1  # stats far from 0/1
    data = TensorDataset(images, torch.randint(0, 2, (16,), generator=generator))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        val_check_interval=2,  # a validation mid-epoch (after 2 of 4 batches) and at the end
        limit_val_batches=1,
        num_sanity_val_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[freezer],
        default_root_dir=root,
    )
    trainer.fit(
        module,
        train_dataloaders=DataLoader(data, batch_size=4),
        val_dataloaders=DataLoader(data, batch_size=4),
    )


@pytest.mark.parametrize("module_class", [RxVisionTrainer, _TrainAfterValidation])
def test_frozen_blocks_keep_their_batchnorm_statistics(
    module_class: type[RxVisionTrainer], tmp_path: Path
) -> None:
    net, blocks = _tiny_bn_backbone()
    # 2 blocks in 2 stages from epoch 1: block 1 unfreezes at epoch 1, block 0 at epoch 2
    ft = FineTuningConfig(gradual_unfreeze=True, unfreeze_at_epoch=1, unfreeze_stages=2)
    module = module_class(net, 8, ["a", "b"], fine_tuning=ft)
    stem, top = _bn(blocks[0]), _bn(blocks[1])
    stem_mean, top_mean = stem.running_mean.clone(), top.running_mean.clone()
    _fit(module, BackboneFreezer(blocks, ft), epochs=2, root=tmp_path)
    # the stem stayed frozen: not one update, through four validations
    assert torch.equal(stem.running_mean, stem_mean)
    assert int(stem.num_batches_tracked) == 0
    if module_class is RxVisionTrainer:  # the other ends fit with its own .train()
        assert not blocks[0].training and not stem.training
    # the top block was frozen in epoch 0 and trained in epoch 1 (4 batches)
    assert int(top.num_batches_tracked) == 4
    assert not torch.allclose(top.running_mean, top_mean)
    assert blocks[1].training and top.training


def test_a_never_training_backbone_keeps_its_statistics_and_the_head_trains(
    tmp_path: Path,
) -> None:
    net, blocks = _tiny_bn_backbone()
    ft = FineTuningConfig(freeze_backbone=True)
    module = RxVisionTrainer(net, 8, ["a", "b"], fine_tuning=ft)
    head = [p.detach().clone() for p in module.head.parameters()]
    _fit(module, BackboneFreezer(blocks, ft), epochs=1, root=tmp_path)
    assert all(int(_bn(b).num_batches_tracked) == 0 for b in blocks)
    assert all(torch.equal(_bn(b).running_var, torch.ones_like(_bn(b).running_var)) for b in blocks)
    assert any(not torch.equal(a, p) for a, p in zip(head, module.head.parameters(), strict=True))


def test_apply_sets_the_mode_of_scheduled_blocks() -> None:
    net, blocks = _tiny_bn_backbone()
    ft = FineTuningConfig(gradual_unfreeze=True, unfreeze_at_epoch=1, unfreeze_stages=2)
    freezer = BackboneFreezer(blocks, ft)
    assert freezer.apply(0) == 0
    assert [b.training for b in blocks] == [False, False]
    net.train()  # as a LightningModule hook may do
    freezer.hold_frozen_in_eval()
    assert [b.training for b in blocks] == [False, False]
    assert freezer.apply(1) == 1
    assert [b.training for b in blocks] == [False, True]
