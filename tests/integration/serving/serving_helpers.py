"""Helpers of the serving integration tests (imported by name: tests are not a package)."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from mlflow.tracking import MlflowClient
from torch import nn

from rxvision.config.schema import MlflowTracking
from rxvision.data.imaging import ImageSpec
from rxvision.home import Home
from rxvision.storage.s3 import S3Store
from rxvision.train.backbones import build_backbone
from rxvision.train.tracking import RunTracker, lineage_tags

IMG = 48


def tiny_net(classes: int, seed: int = 0, nan: bool = False) -> nn.Sequential:
    """``RxVisionTrainer.export_model``'s format with mobilenet_v3_small (random init);
    ``nan``: a broken model whose head weights are NaN."""
    torch.manual_seed(seed)
    backbone = build_backbone("mobilenet_v3_small")
    head = nn.Sequential(nn.Dropout(0.0), nn.Linear(backbone.num_features, classes))
    if nan:
        with torch.no_grad():
            head[1].weight.fill_(float("nan"))
    return nn.Sequential(OrderedDict(backbone=backbone.net, head=head)).eval()


def register(
    home: Home, tracking_uri: str, name: str, classes: list[str], *, seed: int, nan: bool = False
) -> str:
    """Log a training run as rxvision.train does and register its model (bypassing the
    gates: these tests are about serving). Returns the version."""
    run_name = f"it-serve-{uuid.uuid4().hex[:6]}"
    tracker = RunTracker(
        MlflowTracking(experiment_name="it-serving", tracking_uri=tracking_uri), home
    )
    run_id = tracker.start(run_name, lineage_tags(run_name, snapshot_rev="v1", snapshot_hash="h"))
    model_uri = tracker.log_model(
        tiny_net(len(classes), seed, nan), classes=classes, spec=ImageSpec(img_size=IMG)
    )
    tracker.end()
    client = MlflowClient(tracking_uri)
    with contextlib.suppress(Exception):  # already there
        client.create_registered_model(name)
    version = client.create_model_version(
        name, model_uri, run_id=run_id, model_id=model_uri.removeprefix("models:/")
    )
    return str(version.version)


def upload_folder(store: S3Store, folder: Path, uri: str) -> list[str]:
    """Upload every file under ``folder``; return the S3 URIs."""
    uris = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        target = f"{uri.rstrip('/')}/{path.relative_to(folder).as_posix()}"
        store.upload_file(path, target)
        uris.append(target)
    return uris


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy (statsd state is flushed twice a second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)
