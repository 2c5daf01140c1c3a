"""Helpers of the registry integration tests (imported by name: tests are not a package)."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from collections import OrderedDict

import torch
from torch import nn

from rxvision.config.schema import MlflowTracking
from rxvision.data.imaging import ImageSpec
from rxvision.home import Home
from rxvision.train.backbones import build_backbone
from rxvision.train.tracking import RunTracker, lineage_tags

CLASSES = ["ndc-10000-0011-zanex-5mg", "ndc-10000-0048-zanex-10mg", "ndc-17919-0085-corex-10mg"]
IMG = 48


def tiny_net(seed: int, classes: int = len(CLASSES)) -> nn.Sequential:
    """What ``RxVisionTrainer.export_model`` returns, with mobilenet_v3_small (random init)."""
    torch.manual_seed(seed)
    backbone = build_backbone("mobilenet_v3_small")
    head = nn.Sequential(nn.Dropout(0.0), nn.Linear(backbone.num_features, classes))
    return nn.Sequential(OrderedDict(backbone=backbone.net, head=head)).eval()


def log_training_run(
    home: Home, tracking_uri: str, run_name: str, *, seed: int = 0, net: nn.Module | None = None
) -> tuple[str, str]:
    """A training run logged as ``rxvision.train.run`` logs one: lineage tags, config
    params, the model. Returns (model URI, MLflow run id)."""
    tracker = RunTracker(
        MlflowTracking(experiment_name="it-registry", tracking_uri=tracking_uri), home
    )
    run_id = tracker.start(
        run_name, lineage_tags(run_name, snapshot_rev="pills-v1", snapshot_hash="c0ffee")
    )
    tracker.log_params(
        {
            "model.architecture": "mobilenet_v3_small",
            "data.img_size": IMG,
            "data.val_fraction": 0.2,
            "data.split_seed": 0,
            "data.source": "s3://rxvision-data/snapshots/pills-v1",
            "data.classes": len(CLASSES),
            "run.max_steps": 10,
        }
    )
    model_uri = tracker.log_model(
        net or tiny_net(seed), classes=CLASSES, spec=ImageSpec(img_size=IMG)
    )
    tracker.end()
    return model_uri, run_id


def good_metrics(top1: float = 0.93) -> dict[str, float]:
    """Metrics that pass the default gates."""
    return {
        "test_top1": top1,
        "test_ece": 0.04,
        **{f"test_recall_{c}": 0.9 for c in CLASSES},
    }
