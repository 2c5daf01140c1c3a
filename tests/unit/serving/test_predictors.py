"""The runtimes: eager under autocast returns fp32 logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from serving_fixtures import IMG, loaded_model

from rxvision.serving.predictors import EagerPredictor, autocast_dtype

pytestmark = pytest.mark.unit


def test_autocast_dtype_on_cpu_is_fp32_without_native_bf16() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    eager = EagerPredictor(loaded_model().model, cpu, torch.bfloat16)
    logits = eager.predict(torch.zeros(2, 3, IMG, IMG))
    assert logits.dtype == np.float32 and logits.shape == (2, 3)
