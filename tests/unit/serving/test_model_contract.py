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
