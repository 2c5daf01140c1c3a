"""Freezing and unfreezing the backbone on schedule."""

from __future__ import annotations

import pytest
import torch

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
