"""Calibrated confidence: temperature scaling (Guo et al., 2017) and the review threshold.

A network trained with cross-entropy is over- or under-confident; dividing its logits by
one temperature ``T`` fitted on held-out data (the validation split: never the test split,
which judges the result) fixes most of that without changing any prediction (the argmax
is the same). ``T`` is stored with the model version and applied wherever probabilities
are computed (scoring, evaluation), so ``confidence`` means what it says.

The review threshold routes a photo to a pharmacist: the lowest confidence at which the
predictions at or above it reach ``precision`` on validation, so that auto-accepted rows
are right at least that often.
"""

from __future__ import annotations

import math

import numpy as np

# the review threshold of a model that was given none (a version made before thresholds)
DEFAULT_REVIEW_THRESHOLD = 0.6
# search range of log T: T in [0.05, 20]
_LOG_T_RANGE = (math.log(0.05), math.log(20.0))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (float64, numerically stable)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    out: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return out


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean cross-entropy of the labels under ``softmax(logits / temperature)``."""
    probs = softmax(logits, temperature)
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, iterations: int = 60) -> float:
    """The temperature that minimizes the NLL of ``labels`` (golden-section search on
    log T: the NLL is unimodal in it); 1.0 when there is nothing to fit on. With no error
    on the fitting set the NLL falls without bound as T shrinks: the search would return
    its lower bound and make every later mistake look certain, so the model's own
    confidences are kept (1.0) instead."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0 or logits.shape[1] < 2:
        return 1.0
    if bool((logits.argmax(axis=1) == labels).all()):
        return 1.0
    lo, hi = _LOG_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa = negative_log_likelihood(logits, labels, math.exp(a))
    fb = negative_log_likelihood(logits, labels, math.exp(b))
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = negative_log_likelihood(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = negative_log_likelihood(logits, labels, math.exp(b))
    return float(math.exp((lo + hi) / 2))


def review_threshold(probs: np.ndarray, labels: np.ndarray, precision: float) -> float:
    """The lowest confidence ``t`` such that the predictions with confidence >= ``t`` are
    right at least ``precision`` of the time (1.0 when even the most confident are not:
    everything goes to review)."""
    if len(labels) == 0:
        return 1.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    order = np.argsort(-confidence, kind="stable")
    hits = np.cumsum(correct[order])
    kept = np.arange(1, len(order) + 1)
    ok = hits / kept >= precision
    if not ok.any():
        return 1.0
    # the largest accepted set: every prediction down to the last index where it holds
    last = int(np.flatnonzero(ok)[-1])
    return float(confidence[order][last])
