"""The serving contract: logits, and features when asked; what can be served."""

from __future__ import annotations

import pytest
import torch
from serving_fixtures import IMG, tiny_net
from torch import nn

from rxvision.errors import ConfigError
from rxvision.serving.model_contract import serving_model

pytestmark = pytest.mark.unit


def test_contract_returns_logits_and_features_when_asked() -> None:
    model = serving_model(tiny_net())
    x = torch.zeros(2, 3, IMG, IMG)
    assert set(model(x)) == {"logits"}
    out = model(x, return_features=True)
    assert out["logits"].shape == (2, 3) and out["features"].shape == (2, 8)


def test_serving_model_refuses_other_modules() -> None:
    with pytest.raises(ConfigError, match=r"nn\.Sequential"):
        serving_model(nn.Linear(2, 2))


def test_a_network_given_as_a_loader_is_loaded_once_on_first_use() -> None:
    from rxvision.data.imaging import ImageSpec
    from rxvision.serving.model_contract import LoadedModel, ModelRef

    calls: list[int] = []

    def load() -> nn.Module:
        calls.append(1)
        return serving_model(tiny_net())

    ref = ModelRef(uri="models:/tiny/1", pinned_uri="models:/tiny/1", label="tiny/1")
    loaded = LoadedModel(load, ["a", "b", "c"], ImageSpec(img_size=IMG), ref)  # type: ignore[arg-type]
    assert calls == [] and loaded.label == "tiny/1" and loaded.img_size == IMG
    first = loaded.model
    assert loaded.model is first and calls == [1]
    assert first(torch.zeros(1, 3, IMG, IMG))["logits"].shape == (1, 3)


def test_a_version_without_its_own_review_threshold_reviews_at_the_default() -> None:
    from rxvision.data.imaging import ImageSpec
    from rxvision.serving.calibration import DEFAULT_REVIEW_THRESHOLD
    from rxvision.serving.model_contract import LoadedModel, ModelRef

    ref = ModelRef(uri="models:/tiny/1", pinned_uri="models:/tiny/1", label="tiny/1")
    net = serving_model(tiny_net())
    chosen = LoadedModel(net, ["a", "b", "c"], ImageSpec(img_size=IMG), ref, review_threshold=0.83)
    older = LoadedModel(net, ["a", "b", "c"], ImageSpec(img_size=IMG), ref)
    assert chosen.review_threshold_or_default == 0.83
    assert older.review_threshold_or_default == DEFAULT_REVIEW_THRESHOLD == 0.6
