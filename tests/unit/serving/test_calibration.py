"""Temperature scaling and the review threshold."""

from __future__ import annotations

import numpy as np
import pytest

from rxvision.registry.gates import expected_calibration_error
from rxvision.serving.calibration import (
    fit_temperature,
    negative_log_likelihood,
    review_threshold,
    softmax,
)

pytestmark = pytest.mark.unit


def overconfident(n: int = 3000, classes: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated model's logits made 4x too sharp: labels are drawn from the softmax
    of ``base``, the model says ``4 * base``."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 2.0, size=(n, classes))
    probs = softmax(base)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return base * 4.0, labels


def ece(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    probs = softmax(logits, temperature)
    return expected_calibration_error(probs.max(1), probs.argmax(1) == labels)


def test_temperature_scaling_lowers_the_ece_of_an_overconfident_model() -> None:
    val_logits, val_labels = overconfident(seed=0)
    test_logits, test_labels = overconfident(seed=1)  # fitted on one split, judged on another
    temperature = fit_temperature(val_logits, val_labels)
    assert 3.2 < temperature < 4.8  # it found the 4x
    before, after = ece(test_logits, test_labels, 1.0), ece(test_logits, test_labels, temperature)
    assert before > 0.15 and after < 0.04 and after < before / 4
    # the fitted temperature is the NLL minimum, and predictions do not change
    nll = negative_log_likelihood(val_logits, val_labels, temperature)
    for other in (temperature * 0.8, temperature * 1.25):
        assert negative_log_likelihood(val_logits, val_labels, other) > nll
    assert np.array_equal(softmax(test_logits, temperature).argmax(1), test_logits.argmax(1))


def test_nothing_to_fit_is_temperature_one() -> None:
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0


def test_a_validation_set_without_errors_keeps_the_models_confidences() -> None:
    # every prediction right: the NLL keeps falling as T shrinks; the search's lower bound
    # would make the model certain of its next mistake
    logits = np.array([[2.0, 0.5, 0.1], [0.2, 1.5, 0.3], [0.1, 0.4, 3.0]])
    labels = np.array([0, 1, 2])
    assert negative_log_likelihood(logits, labels, 0.1) < negative_log_likelihood(
        logits, labels, 1.0
    )
    assert fit_temperature(logits, labels) == 1.0
    # one error is evidence to fit on
    assert fit_temperature(logits, np.array([0, 1, 1])) != 1.0


def test_review_threshold_keeps_the_chosen_precision() -> None:
    # confidences 0.95..0.50; the three least confident are wrong
    confidence = np.linspace(0.95, 0.5, 10)
    probs = np.stack([confidence, 1 - confidence], axis=1)
    labels = np.array([0] * 7 + [1] * 3)
    t = review_threshold(probs, labels, precision=1.0)
    assert t == pytest.approx(confidence[6])
    accepted = probs.max(1) >= t
    assert (probs.argmax(1)[accepted] == labels[accepted]).all() and accepted.sum() == 7
    # a precision nobody reaches sends everything to review
    assert review_threshold(probs, np.ones(10, dtype=int), precision=0.99) == 1.0
