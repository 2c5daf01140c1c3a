"""Scoring a batch: test-time augmentation of the calibrated probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from serving_fixtures import IMG, loaded_model

pytestmark = pytest.mark.unit


def test_tta_averages_the_calibrated_probabilities_of_four_quarter_turns() -> None:
    from rxvision.serving.calibration import softmax as calibrated
    from rxvision.serving.predictors import EagerPredictor
    from rxvision.serving.shard_scorer import tta_probs

    predictor = EagerPredictor(loaded_model().model, torch.device("cpu"))
    images = torch.randn(3, 3, IMG, IMG)
    probs, ok = tta_probs(predictor, images, 2.0, 4)
    turns = [predictor.predict(torch.rot90(images, k, dims=(2, 3))) for k in range(4)]
    expected = np.mean([calibrated(t, 2.0) for t in turns], axis=0)
    assert ok.all() and np.allclose(probs, expected, atol=1e-6)
    single, _ = tta_probs(predictor, images, 2.0, 1)
    assert np.allclose(single, calibrated(turns[0], 2.0), atol=1e-6)
    assert not np.allclose(single, probs)  # the turns did change something
