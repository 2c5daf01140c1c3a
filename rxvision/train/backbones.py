"""Backbones from torchvision, built with ``weights=None``, and pretrained weights from a URI.

A backbone is a torchvision classifier whose last ``Linear`` is replaced by
``nn.Identity``: it maps images to pooled features. The classification head is added by
``rxvision.train.module``. Pretrained weights are never downloaded from the internet:
``model.weights_uri`` names a torchvision-format ``state_dict`` in a local file or in S3.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models

from rxvision.errors import ConfigError, NotFound
from rxvision.home import Home
from rxvision.storage.s3 import S3Store

log = logging.getLogger(__name__)


def resnet18_fine(**kwargs: object) -> models.ResNet:
    """ResNet-18 without the stem's max-pool: the first stage sees the input at half
    resolution, not a quarter (imprint strokes of a few pixels survive the stem). The
    same parameters as ResNet-18 (its weights load), four times the compute after it."""
    net = models.resnet18(**kwargs)
    net.maxpool = nn.Identity()
    return net


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": models.resnet18,
    "resnet18_fine": resnet18_fine,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "mobilenet_v3_small": models.mobilenet_v3_small,
    "mobilenet_v3_large": models.mobilenet_v3_large,
}


class PretrainedWeightsError(ConfigError):
    """Pretrained weights were asked for but cannot be found or do not fit the backbone."""


@dataclass
class Backbone:
    """A feature extractor, its feature width, and its blocks from input to output."""

    net: nn.Module
    num_features: int
    architecture: str

    def blocks(self) -> list[nn.Module]:
        """Blocks with parameters, from the input to the output (for gradual unfreezing)."""
        return backbone_blocks(self.net)


def build_backbone(architecture: str) -> Backbone:
    """A torchvision ``architecture`` with random weights and its head removed."""
    if architecture not in ARCHITECTURES:
        raise ConfigError(
            f"model.architecture: unknown backbone {architecture!r}; "
            f"choose one of {', '.join(ARCHITECTURES)}"
        )
    net = ARCHITECTURES[architecture](weights=None)
    num_features = _drop_classifier(net)
    return Backbone(net=net, num_features=num_features, architecture=architecture)


def _drop_classifier(net: nn.Module) -> int:
    """Replace the last Linear with Identity (in place); return its input width."""
    if isinstance(net, models.ResNet):
        fc = net.fc
        assert isinstance(fc, nn.Linear)
        net.fc = nn.Identity()
        return fc.in_features
    if isinstance(net, models.MobileNetV3):
        classifier = net.classifier
        last = classifier[-1]
        assert isinstance(last, nn.Linear)
        classifier[-1] = nn.Identity()
        return last.in_features
    raise ConfigError(f"no head rule for {type(net).__name__}")


def classifier_prefix(architecture: str) -> str:
    """The ``state_dict`` prefix of the torchvision classifier layer this backbone drops."""
    return "fc." if architecture.startswith("resnet") else "classifier.3."


def backbone_blocks(net: nn.Module) -> list[nn.Module]:
    """The backbone's parametrised blocks in forward order (stem, stages, pre-head MLP)."""
    if isinstance(net, models.ResNet):
        stem = nn.ModuleList([net.conv1, net.bn1])
        return [stem, net.layer1, net.layer2, net.layer3, net.layer4]
    if isinstance(net, models.MobileNetV3):
        return [*net.features.children(), net.classifier]
    return [m for m in net.children() if any(True for _ in m.parameters())]


def load_pretrained(
    backbone: Backbone,
    weights_uri: str | None,
    *,
    allow_random_init: bool,
    cache_dir: Path | None = None,
) -> bool:
    """Load torchvision-format weights from ``weights_uri`` into ``backbone`` (in place).

    Returns True when weights were loaded, False when the backbone keeps its random init
    (only with ``allow_random_init``). The classifier layer's weights are ignored: the
    head is new. Raises ``PretrainedWeightsError`` naming ``model.weights_uri``.
    """
    if not weights_uri:
        return _random_init_or_fail(
            backbone, "model.pretrained is true but model.weights_uri is not set", allow_random_init
        )
    try:
        path = fetch_weights(weights_uri, cache_dir or Home.from_env().cache_dir / "weights")
    except NotFound as exc:
        return _random_init_or_fail(backbone, str(exc), allow_random_init)
    state = read_state_dict(path)
    apply_state_dict(backbone, state, source=weights_uri)
    log.info("loaded %s weights from %s", backbone.architecture, weights_uri)
    return True


def _random_init_or_fail(backbone: Backbone, problem: str, allow_random_init: bool) -> bool:
    if allow_random_init:
        log.warning("%s: training %s from random init", problem, backbone.architecture)
        return False
    raise PretrainedWeightsError(
        f"{problem}. Put a torchvision state_dict for {backbone.architecture} (e.g. the file "
        f"torchvision saves as ~/.cache/torch/hub/checkpoints/{backbone.architecture}-*.pth) "
        "in a local file or in S3 and set model.weights_uri=/path/to/file.pth or "
        "model.weights_uri=s3://bucket/key.pth; or set model.allow_random_init=true "
        "(or model.pretrained=false) to train from random weights"
    )


def fetch_weights(uri: str, cache_dir: Path, store: S3Store | None = None) -> Path:
    """A local path for ``uri``: the file itself, or an S3 object downloaded once to the cache.

    Raises ``NotFound`` (naming ``model.weights_uri``) when the file or object is missing.
    """
    if uri.startswith("s3://"):
        digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
        target = cache_dir / digest / Path(uri).name
        if target.is_file():
            return target
        try:
            (store or S3Store()).download_file(uri, target)
        except NotFound as exc:
            raise NotFound(f"model.weights_uri={uri}: no such S3 object") from exc
        return target
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise NotFound(f"model.weights_uri={uri}: no such file")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``state_dict`` saved by torchvision, by torchvision's reference scripts
    (``{"model": ...}``) or by Lightning (``{"state_dict": ...}``)."""
    try:
        # weights_only: a weights file must never run code when loaded
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike mean an unusable file
        raise PretrainedWeightsError(f"model.weights_uri: cannot read {path}: {exc}") from exc
    for key in ("model", "state_dict"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise PretrainedWeightsError(f"model.weights_uri: {path} holds no state_dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in data.items()}


def apply_state_dict(backbone: Backbone, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every backbone tensor from ``state``; the dropped classifier's keys are skipped."""
    drop = classifier_prefix(backbone.architecture)
    wanted = {k: v for k, v in state.items() if not k.startswith(drop)}
    try:
        missing, unexpected = backbone.net.load_state_dict(wanted, strict=False)
    except RuntimeError as exc:  # shape mismatches: weights of another architecture
        raise PretrainedWeightsError(
            f"model.weights_uri={source} does not fit {backbone.architecture}: {exc}"
        ) from exc
    if missing or unexpected:
        raise PretrainedWeightsError(
            f"model.weights_uri={source} does not fit {backbone.architecture}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
