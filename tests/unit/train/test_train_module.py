"""RxVisionTrainer: shapes, metrics, optimizer defaults, DDP settings, export."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.optim import AdamW
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts
from torch.utils.data import DataLoader, TensorDataset

from rxvision.data.presets import normalize_batch
from rxvision.train.backbones import build_backbone
from rxvision.train.config import FineTuningConfig
from rxvision.train.module import (
    DDP_STATIC,
    RxVisionTrainer,
    collect_rng_states,
    restore_rng_states,
)

pytestmark = pytest.mark.unit

CLASSES = ["ndc-a", "ndc-b", "ndc-c"]


def make_module(backbone: torch.nn.Module, **kwargs: object) -> RxVisionTrainer:
    return RxVisionTrainer(backbone, 8, CLASSES, **kwargs)  # type: ignore[arg-type]


def test_forward_gives_one_logit_per_class(tiny_backbone: torch.nn.Module) -> None:
    module = make_module(tiny_backbone, channels_last=True)
    logits = module(torch.randn(5, 3, 16, 16))
    assert logits.shape == (5, 3)
    probs = module.predict_step((torch.randn(4, 3, 16, 16), torch.zeros(4)), 0)
    assert probs.shape == (4, 3)
    assert torch.allclose(probs.sum(dim=1), torch.ones(4), atol=1e-5)


def test_training_step_returns_a_scalar_loss(tiny_backbone: torch.nn.Module) -> None:
    module = make_module(tiny_backbone, label_smoothing=0.1)
    loss = module.training_step((torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])), 0)
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    assert module.head[1].weight.grad is not None


def _validate(module: RxVisionTrainer, n: int = 12) -> dict[str, float]:
    torch.manual_seed(1)
    data = TensorDataset(torch.randn(n, 3, 16, 16), torch.arange(n) % len(CLASSES))
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (metrics,) = trainer.validate(module, dataloaders=DataLoader(data, batch_size=5), verbose=False)
    return metrics


def test_uint8_batches_are_normalized_after_transfer(tiny_backbone: torch.nn.Module) -> None:
    module = make_module(tiny_backbone)
    raw = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    labels = torch.tensor([0, 1])
    images, same_labels = module.on_after_batch_transfer([raw, labels], 0)
    torch.testing.assert_close(images, normalize_batch(raw))
    assert same_labels is labels
    floats = torch.randn(2, 3, 16, 16)  # an evaluation batch: the model input already
    assert module.on_after_batch_transfer([floats, labels], 0)[0] is floats
    assert module.on_after_batch_transfer(floats, 0) is floats


def test_validation_logs_every_metric(tiny_backbone: torch.nn.Module) -> None:
    module = make_module(tiny_backbone)
    metrics = _validate(module)
    for key in ("val/loss", "val/top1", "val/top5", "val/macro_f1", "val/ece"):
        assert key in metrics, key
        assert metrics[key] >= 0.0 or key == "val/loss"
    assert metrics["val/top5"] == pytest.approx(1.0)  # 3 classes: top-5 holds them all
    assert {f"val/recall/{c}" for c in CLASSES} <= set(metrics)
    assert module.confusion is not None
    assert module.confusion.shape == (3, 3)
    assert module.confusion.sum() == 12
    assert module.confusion.sum(axis=1).tolist() == [4, 4, 4]


def test_top1_is_the_accuracy(tiny_backbone: torch.nn.Module) -> None:
    module = make_module(tiny_backbone)
    metrics = _validate(module)
    assert module.confusion is not None
    accuracy = module.confusion.trace() / module.confusion.sum()
    assert metrics["val/top1"] == pytest.approx(accuracy)


def test_optimizer_and_scheduler_follow_the_seed(tiny_backbone: torch.nn.Module) -> None:
    module = make_module(tiny_backbone, steps_per_epoch=7)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, AdamW)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-4]
    assert all(g["weight_decay"] == 1e-5 for g in optimizer.param_groups)
    assert isinstance(scheduler, CosineAnnealingWarmRestarts)
    assert scheduler.T_0 == 70  # 10 epochs of 7 steps
    assert scheduler.eta_min == 1e-6
    assert config["lr_scheduler"]["interval"] == "step"


def test_frozen_backbone_gets_a_lower_learning_rate(tiny_backbone: torch.nn.Module) -> None:
    ft = FineTuningConfig(gradual_unfreeze=True, backbone_lr_ratio=0.1)
    module = make_module(tiny_backbone, fine_tuning=ft)
    lrs = {g["name"]: g["lr"] for g in module.configure_optimizers()["optimizer"].param_groups}
    assert lrs == {"head": 1e-4, "backbone": pytest.approx(1e-5)}


def test_warmup_then_cosine(tiny_backbone: torch.nn.Module) -> None:
    from rxvision.train.config import SchedulerConfig

    module = make_module(
        tiny_backbone, scheduler=SchedulerConfig(warmup_epochs=1), steps_per_epoch=4
    )
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(6):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] < lrs[2] < 1e-4 + 1e-12  # warming up
    assert lrs[4] < lrs[3]  # cosine decay after the warm-up


def test_configure_ddp() -> None:
    module = make_module(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(8)))
    assert module.configure_ddp() == {
        "find_unused_parameters": False,
        "gradient_as_bucket_view": True,
        "static_graph": True,
    }
    assert module.configure_ddp() == DDP_STATIC
    gradual = make_module(torch.nn.Identity(), fine_tuning=FineTuningConfig(gradual_unfreeze=True))
    # parameters join the graph when unfrozen: a static graph would be wrong
    assert gradual.configure_ddp()["static_graph"] is False
    assert gradual.configure_ddp()["find_unused_parameters"] is True


def test_export_is_a_plain_torchvision_model() -> None:
    backbone = build_backbone("resnet18")
    module = RxVisionTrainer(
        backbone.net, backbone.num_features, CLASSES, architecture="resnet18", channels_last=True
    )
    net = module.export_model()
    assert not net.training
    assert {type(m).__module__.split(".")[0] for m in net.modules()} <= {"torch", "torchvision"}
    x = torch.randn(2, 3, 32, 32)
    module.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), module(x), atol=1e-5)


def test_rng_states_round_trip() -> None:
    import random

    import numpy as np

    states = collect_rng_states()
    first = (torch.rand(1).item(), random.random(), np.random.rand())
    restore_rng_states(states)
    assert (torch.rand(1).item(), random.random(), np.random.rand()) == first
