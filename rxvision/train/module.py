"""``RxVisionTrainer``: the LightningModule of the pill classifier.

The backbone ``nn.Module`` is injected (``rxvision.train.backbones`` builds it from the
config); this module adds the classification head, the loss, the metrics, the optimizer
and the scheduler. Freezing the backbone is the job of a callback
(``rxvision.train.callbacks.BackboneFreezer``).
"""

from __future__ import annotations

import copy
import random
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim import SGD, AdamW, Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingWarmRestarts,
    LinearLR,
    LRScheduler,
    SequentialLR,
)
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)

from rxvision.data.presets import normalize_batch
from rxvision.train.backbones import ARCHITECTURES, build_backbone
from rxvision.train.config import FineTuningConfig, OptimizerConfig, SchedulerConfig

# DDP settings for a fixed graph: every parameter gets a gradient at every step.
DDP_STATIC = {
    "find_unused_parameters": False,
    "gradient_as_bucket_view": True,
    "static_graph": True,
}
# With gradual unfreezing the set of parameters with gradients changes during the run,
# which a static graph forbids; DDP must look for unused ones instead.
DDP_DYNAMIC = {
    "find_unused_parameters": True,
    "gradient_as_bucket_view": True,
    "static_graph": False,
}


def metric_name(text: str) -> str:
    """A class name as an MLflow metric key part (letters, digits, ``-._``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


class RxVisionTrainer(pl.LightningModule):
    """Backbone + linear head, trained with cross-entropy; top-1/top-5, macro F1, ECE,
    per-class recall and a confusion matrix on validation."""

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        classes: Sequence[str],
        *,
        architecture: str | None = None,
        optimizer: OptimizerConfig | None = None,
        scheduler: SchedulerConfig | None = None,
        fine_tuning: FineTuningConfig | None = None,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        steps_per_epoch: int = 1,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.classes = list(classes)
        self.architecture = architecture
        self.optimizer_config = optimizer or OptimizerConfig()
        self.scheduler_config = scheduler or SchedulerConfig()
        self.fine_tuning = fine_tuning or FineTuningConfig()
        self.label_smoothing = label_smoothing
        self.steps_per_epoch = steps_per_epoch
        self.channels_last = channels_last
        # plain values only: checkpoints are read back with torch.load(weights_only=True)
        self.save_hyperparameters(
            {
                "classes": self.classes,
                "architecture": architecture,
                "num_features": num_features,
                "dropout": dropout,
                "label_smoothing": label_smoothing,
                "steps_per_epoch": steps_per_epoch,
                "optimizer": self.optimizer_config.model_dump(),
                "scheduler": self.scheduler_config.model_dump(),
                "fine_tuning": self.fine_tuning.model_dump(),
            }
        )
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, len(self.classes)))
        if channels_last:
            self.to(memory_format=torch.channels_last)
        n = len(self.classes)
        self.train_top1 = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_metrics = MetricCollection(
            {
                "top1": MulticlassAccuracy(num_classes=n, top_k=1, average="micro"),
                # top-5 of fewer than 5 classes is top-n (always 1.0)
                "top5": MulticlassAccuracy(num_classes=n, top_k=min(5, n), average="micro"),
                "macro_f1": MulticlassF1Score(num_classes=n, average="macro"),
                "ece": MulticlassCalibrationError(num_classes=n, n_bins=15, norm="l1"),
            },
            prefix="val/",
        )
        self.val_recall = MulticlassRecall(num_classes=n, average=None)
        self.val_confusion = MulticlassConfusionMatrix(num_classes=n)
        self.confusion: np.ndarray | None = None
        self.per_class_recall: dict[str, float] = {}

    # --- forward ---------------------------------------------------------------------

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits, one row per image (channels-last input when asked: faster convolutions)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features: torch.Tensor = self.backbone(images)
        logits: torch.Tensor = self.head(features)
        return logits

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalize a uint8 image batch (``TrainPreset(normalize_in_batch=True)``) on its
        device; float batches (evaluation presets) are the model input already."""
        images, *rest = batch if isinstance(batch, (list, tuple)) else (batch,)
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
            images = normalize_batch(images)
        return (images, *rest) if isinstance(batch, (list, tuple)) else images

    # --- steps -----------------------------------------------------------------------

    def _model_step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return loss, logits.float(), labels

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Cross-entropy on one batch; logs ``train/loss`` per step."""
        loss, logits, labels = self._model_step(batch)
        self.train_top1(logits, labels)
        batch_size = labels.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log(
            "train/epoch_loss",
            loss,
            on_step=False,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=True,
        )
        self.log("train/top1", self.train_top1, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Loss and metric updates on one validation batch."""
        loss, logits, labels = self._model_step(batch)
        probs = logits.softmax(dim=1)
        self.val_metrics.update(probs, labels)
        self.val_recall.update(probs, labels)
        self.val_confusion.update(probs, labels)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=labels.shape[0])

    def on_validation_epoch_end(self) -> None:
        """Log the scalar metrics and the recall of each class that had images (a class
        without validation images has no recall, not a recall of 0); keep the confusion
        matrix."""
        self.log_dict(self.val_metrics.compute(), sync_dist=False)
        self.val_metrics.reset()
        recall = self.val_recall.compute().detach().cpu()
        self.val_recall.reset()
        self.confusion = self.val_confusion.compute().detach().cpu().numpy()
        self.val_confusion.reset()
        support = self.confusion.sum(axis=1)
        self.per_class_recall = {
            name: float(value)
            for name, value, n in zip(self.classes, recall, support, strict=True)
            if n > 0
        }
        for name, value in self.per_class_recall.items():
            self.log(f"val/recall/{metric_name(name)}", value, sync_dist=False)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities of a batch of images (labels, if present, are ignored)."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        probs: torch.Tensor = self(images).float().softmax(dim=1)
        return probs

    # --- optimisation ----------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """AdamW (or SGD) over two groups, head and backbone; the scheduler steps per
        optimizer step, with ``T_0`` converted from epochs to steps."""
        cfg = self.optimizer_config
        ratio = self.fine_tuning.backbone_lr_ratio if self.fine_tuning.any_frozen else 1.0
        groups = [
            {"params": list(self.head.parameters()), "lr": cfg.lr, "name": "head"},
            {"params": list(self.backbone.parameters()), "lr": cfg.lr * ratio, "name": "backbone"},
        ]
        optimizer: Optimizer
        if cfg.name == "SGD":
            optimizer = SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            optimizer = AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = self._scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def _scheduler(self, optimizer: Optimizer) -> LRScheduler | None:
        cfg = self.scheduler_config
        if cfg.name == "none":
            return None
        spe = max(1, self.steps_per_epoch)
        cosine = CosineAnnealingWarmRestarts(
            optimizer, T_0=cfg.T_0 * spe, T_mult=cfg.T_mult, eta_min=cfg.eta_min
        )
        if cfg.warmup_epochs == 0:
            return cosine
        warmup = LinearLR(
            optimizer, start_factor=cfg.warmup_start_factor, total_iters=cfg.warmup_epochs * spe
        )
        return SequentialLR(optimizer, [warmup, cosine], milestones=[cfg.warmup_epochs * spe])

    def configure_ddp(self) -> dict[str, Any]:
        """Keyword arguments of ``DDPStrategy`` for this model."""
        if self.fine_tuning.gradual_unfreeze:
            return dict(DDP_DYNAMIC)
        return dict(DDP_STATIC)

    # --- checkpoints -----------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the RNG states, so that a resumed run draws the same random numbers."""
        checkpoint["rxvision_rng"] = collect_rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the RNG states saved with the checkpoint."""
        if "rxvision_rng" in checkpoint:
            restore_rng_states(checkpoint["rxvision_rng"])

    # --- export ----------------------------------------------------------------------

    def export_model(self) -> nn.Sequential:
        """A standalone copy for inference (torchvision + torch.nn classes only), on CPU,
        in eval mode and contiguous memory format."""
        if self.architecture in ARCHITECTURES:
            # rebuilt and loaded, not deep-copied: a compiled module does not copy cleanly
            backbone = build_backbone(self.architecture).net
            backbone.load_state_dict(
                {k: v.detach().cpu() for k, v in self.backbone.state_dict().items()}
            )
        else:
            backbone = copy.deepcopy(self.backbone).cpu()
        head = copy.deepcopy(self.head).cpu()
        net = nn.Sequential(OrderedDict(backbone=backbone, head=head))
        return net.to(memory_format=torch.contiguous_format).eval()


def collect_rng_states() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain values and tensors."""
    np_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the RNG states made by ``collect_rng_states``."""
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _to_lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_lists(v) for v in value]
    return value
