"""The final evaluation: confused pairs from the test confusion matrix, calibration fitted
on validation only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rxvision.train.evaluation import confused_pairs, final_evaluation, pairs_figure

pytestmark = pytest.mark.unit

CLASSES = ["a-5mg", "a-10mg", "b", "c"]


def test_a_class_whose_errors_go_to_one_other_is_a_pair() -> None:
    confusion = np.array(
        [
            [9, 1, 0, 0],  # a-5mg: 1 error: a stray error, not a pair
            [4, 6, 0, 0],  # a-10mg: 4 errors, all to a-5mg
            [0, 0, 10, 0],  # b: none
            [0, 2, 2, 6],  # c: 4 errors split evenly: a pair at half its errors
        ]
    )
    pairs = confused_pairs(confusion, CLASSES)
    assert [(p.true_class, p.predicted, p.errors) for p in pairs] == [
        ("a-10mg", "a-5mg", 4),
        ("c", "a-10mg", 2),
    ]
    assert pairs[0].recall == pytest.approx(0.6)
    assert pairs[0].describe() == "a-10mg -> a-5mg: 4 of 10 (recall 0.60)"
    figure = pairs_figure(pairs)
    assert figure.axes and figure.axes[0].get_title().startswith("Most-confused pairs")


class Fixed(nn.Module):
    """A 'model' whose logits are its input's first values (for exact expectations)."""

    classes = CLASSES

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : len(CLASSES)]


def test_calibration_is_fitted_on_validation_and_pairs_read_the_test_split() -> None:
    rng = np.random.default_rng(0)

    def split(n: int, confuse: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        labels = rng.integers(0, 4, size=n)
        logits = rng.normal(0, 1, size=(n, 4)) * 0.5
        predicted = labels.copy()
        if confuse:  # a-10mg taken for a-5mg half of the time
            flip = (labels == 1) & (rng.random(n) < 0.5)
            predicted[flip] = 0
        logits[np.arange(n), predicted] += 12.0  # far too sure
        return [(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels))]

    val, test = split(400, confuse=True), split(400, confuse=True)
    result = final_evaluation(Fixed(), CLASSES, val, test)
    m = result.metrics
    assert result.temperature > 1.5  # over-confident: softened
    assert m["test_ece"] < m["test_ece_uncalibrated"]
    assert m["val_images"] == m["test_images"] == 400
    assert m["test_pair_recall_a-10mg"] == pytest.approx(m["test_recall_a-10mg"])
    assert result.pairs[0].true_class == "a-10mg" and result.pairs[0].predicted == "a-5mg"
    assert 0 < result.review_threshold <= 1
    assert result.confusion is not None and result.confusion.sum() == 400
