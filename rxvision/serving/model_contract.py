"""The serving model's contract, and a model loaded for inference.

``ServingModel`` wraps the ``nn.Sequential(backbone, head)`` that training logs with
``mlflow.pytorch`` behind one contract: ``forward(x, return_features=False)`` returns
``{"logits": ...}`` plus ``"features"`` when asked. ``LoadedModel`` is such a model with
what scoring needs to know about it: its classes, its preprocessing contract
(``ImageSpec``), its calibration, and where it came from (``ModelRef``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rxvision.data.eval_batch import EvalBatch
from rxvision.data.imaging import ImageSpec, load_image
from rxvision.data.presets import EvalPreset
from rxvision.errors import ConfigError
from rxvision.serving.calibration import DEFAULT_REVIEW_THRESHOLD


class ServingModel(nn.Module):
    """Backbone and head of a logged classifier, with the serving contract."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor, return_features: bool = False) -> dict[str, torch.Tensor]:
        """``{"logits": (N, classes)}``, plus ``"features": (N, F)`` when asked."""
        features = self.backbone(x)
        out = {"logits": self.head(features)}
        if return_features:
            out["features"] = features
        return out


def serving_model(net: nn.Module) -> ServingModel:
    """A ``ServingModel`` from ``nn.Sequential(OrderedDict(backbone=..., head=...))`` as
    training logs it. (A function, not a classmethod: TorchScript compiles every method of
    a class it meets as a TorchScript class, and this one is not scriptable.)"""
    if isinstance(net, ServingModel):
        return net
    children = dict(net.named_children())
    if "backbone" in children and "head" in children:
        return ServingModel(children["backbone"], children["head"]).eval()
    if isinstance(net, nn.Sequential) and len(net) == 2:
        return ServingModel(net[0], net[1]).eval()
    raise ConfigError(
        f"cannot serve a {type(net).__name__}: expected nn.Sequential(backbone, head) "
        f"(children found: {', '.join(children) or 'none'})"
    )


@dataclass(frozen=True)
class ModelRef:
    """A model URI resolved: what to download, and how rows name it."""

    uri: str
    pinned_uri: str
    label: str
    registered_name: str | None = None
    version: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def cache_id(self) -> str:
        """The local cache folder's key: the label and the run (a registered model that is
        deleted and created again reuses version numbers, never run ids)."""
        return f"{self.label}@{self.run_id}" if self.run_id else self.label

    @property
    def immutable(self) -> bool:
        """Whether the URI always means the same bytes (a version, a run, a logged model)."""
        return "@" not in self.pinned_uri


@dataclass
class LoadedModel:
    """A model ready for inference, with what scoring needs to know about it.

    ``network``: the network, or a function that loads it on first use (``model``)."""

    network: ServingModel | Callable[[], ServingModel]
    classes: list[str]
    spec: ImageSpec
    ref: ModelRef
    local_dir: Path | None = None
    # temperature scaling fitted on the validation split (1.0: uncalibrated)
    temperature: float = 1.0
    review_threshold: float | None = None

    @cached_property
    def model(self) -> ServingModel:
        """The network, loaded on first use when given as a loader: a scoring task whose
        runtime file this host has already checked never needs it, and unpickling it
        imports torchvision's models and with them ``torch._dynamo`` (~1 s a task)."""
        if isinstance(self.network, ServingModel):
            return self.network
        return self.network()

    @property
    def review_threshold_or_default(self) -> float:
        """The review threshold chosen with the model (a precision on its validation
        split), else ``DEFAULT_REVIEW_THRESHOLD`` (a version made before thresholds)."""
        if self.review_threshold is not None:
            return self.review_threshold
        return DEFAULT_REVIEW_THRESHOLD

    @property
    def img_size(self) -> int:
        """The input resolution (square)."""
        return self.spec.img_size

    @property
    def label(self) -> str:
        """How prediction rows name the model (``name/version`` or the URI)."""
        return self.ref.label

    def preset(self) -> EvalPreset:
        """The evaluation transforms the model was validated with."""
        return EvalPreset(img_size=self.img_size)

    def tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """Model input from pixels decoded by ``load_image`` under this model's spec."""
        return _thread_preset(self.img_size)(pixels)

    def batch(self, pixels: Sequence[np.ndarray]) -> torch.Tensor:
        """The (N, 3, H, W) model input of crops decoded under this model's spec: the
        values ``tensor`` gives each, stacked (``rxvision.data.eval_batch``)."""
        return _thread_batch(self.img_size)(pixels)

    def load(self, source: bytes | Path, name: str | None = None) -> torch.Tensor:
        """Model input from an image file or its bytes: the training decode, then the
        evaluation transforms (exactly the tensor training evaluated)."""
        return self.tensor(load_image(source, self.spec, name=name))


# building an albumentations pipeline cost ~140 us, 4x its call on a 112 px crop: one per
# size and thread (a pipeline object is not documented as safe to share across threads)
_PRESETS = threading.local()


def _thread_preset(img_size: int) -> EvalPreset:
    presets: dict[int, EvalPreset] = _PRESETS.__dict__.setdefault("by_size", {})
    if img_size not in presets:
        presets[img_size] = EvalPreset(img_size=img_size)
    return presets[img_size]


def _thread_batch(img_size: int) -> EvalBatch:
    batches: dict[int, EvalBatch] = _PRESETS.__dict__.setdefault("batch_by_size", {})
    if img_size not in batches:
        batches[img_size] = EvalBatch(_thread_preset(img_size))
    return batches[img_size]
