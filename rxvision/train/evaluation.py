"""The final evaluation of a training run: calibration, metrics, look-alike pairs.

Run once, in one process, on the chosen weights: the temperature is fitted on the
validation split, then validation and test are measured with it (and without, for the
record). The test split's confusion matrix names the most-confused pairs: a class whose
errors go mostly to one other class is a look-alike pair, the error a pill classifier
exists to catch, and its recall is gated on its own (``min_pair_recall``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from rxvision.registry.gates import classification_metrics, metric_name
from rxvision.serving.calibration import fit_temperature, review_threshold, softmax

# a class is in a look-alike pair when at least this share of its errors, and at least
# PAIR_MIN_ERRORS images, go to one other class (one stray error is not a pattern)
PAIR_SHARE = 0.5
PAIR_MIN_ERRORS = 2


@dataclass(frozen=True)
class ConfusedPair:
    """A class whose test errors go mostly to one other class."""

    true_class: str
    predicted: str
    errors: int
    class_errors: int
    images: int
    recall: float

    def describe(self) -> str:
        """``A -> B: 3 of 10 (recall 0.70)``."""
        return (
            f"{self.true_class} -> {self.predicted}: {self.errors} of {self.images} "
            f"(recall {self.recall:.2f})"
        )


def confused_pairs(
    confusion: np.ndarray,
    classes: Sequence[str],
    min_share: float = PAIR_SHARE,
    min_errors: int = PAIR_MIN_ERRORS,
) -> list[ConfusedPair]:
    """The most-confused pairs of a confusion matrix (rows: true, columns: predicted),
    most errors first."""
    pairs = []
    for index, name in enumerate(classes):
        row = confusion[index]
        images = int(row.sum())
        errors = images - int(row[index])
        if errors == 0:
            continue
        others = row.copy()
        others[index] = -1
        target = int(others.argmax())
        if others[target] >= max(min_errors, min_share * errors):
            recall = float(row[index]) / images
            pairs.append(
                ConfusedPair(name, classes[target], int(others[target]), errors, images, recall)
            )
    return sorted(pairs, key=lambda p: (-p.errors, p.recall, p.true_class))


def pairs_figure(pairs: Sequence[ConfusedPair], limit: int = 12) -> Figure:
    """A horizontal bar per confused pair: its errors, labelled with its recall."""
    shown = list(pairs[:limit])
    figure = Figure(figsize=(8, 0.6 * max(2, len(shown)) + 1))
    axes = figure.subplots()
    if not shown:
        axes.text(0.5, 0.5, "no confused pair on the test split", ha="center", va="center")
        axes.set_axis_off()
        return figure
    labels = [f"{p.true_class}\n-> {p.predicted}" for p in shown][::-1]
    values = [p.errors for p in shown][::-1]
    bars = axes.barh(labels, values, color="#c44e52")
    for bar, pair in zip(bars, shown[::-1], strict=True):
        axes.text(
            bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  recall {pair.recall:.2f}"
        )
    axes.set_xlabel("test images of the first class predicted as the second")
    axes.set_title("Most-confused pairs (test split)")
    figure.tight_layout()
    return figure


@dataclass
class FinalEvaluation:
    """Metrics of the chosen weights on validation (``val_*``) and test (``test_*``)."""

    metrics: dict[str, float]
    confusion: np.ndarray | None
    temperature: float = 1.0
    review_threshold: float = 1.0
    pairs: list[ConfusedPair] = field(default_factory=list)

    def pairs_record(self) -> dict[str, Any]:
        """The most-confused pairs as JSON."""
        return {
            "pairs": [asdict(p) for p in self.pairs],
            "min_share": PAIR_SHARE,
            "min_errors": PAIR_MIN_ERRORS,
        }


def predict_logits(module: torch.nn.Module, loader: Any) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of every batch of ``loader`` (fp32, eval mode)."""
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    logits, labels = [], []
    with torch.inference_mode():
        for images, target in loader:
            logits.append(module(images.to(device)).float().cpu().numpy())
            labels.append(target.numpy())
    module.train(was_training)
    if not logits:
        classes = len(getattr(module, "classes", [])) or 1
        return np.zeros((0, classes), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(logits), np.concatenate(labels)


def final_evaluation(
    module: torch.nn.Module,
    classes: Sequence[str],
    val_loader: Any,
    test_loader: Any,
    *,
    calibrate: bool = True,
    review_precision: float = 0.99,
) -> FinalEvaluation:
    """Fit the temperature on validation; measure validation and test with it: top-1,
    top-5, ECE (and ECE before calibration), per-class recall (classes with images only),
    image counts, the recall of each class of a confused pair, and the review threshold
    that keeps ``review_precision`` on validation."""
    val_logits, val_labels = predict_logits(module, val_loader)
    temperature = fit_temperature(val_logits, val_labels) if calibrate else 1.0
    metrics: dict[str, float] = {"temperature": temperature}
    confusion = None
    threshold = 1.0
    pairs: list[ConfusedPair] = []
    for split, (logits, labels) in {
        "val": (val_logits, val_labels),
        "test": predict_logits(module, test_loader),
    }.items():
        probs = softmax(logits, temperature)
        metrics[f"{split}_images"] = float(len(labels))
        metrics.update(classification_metrics(probs, labels, classes, prefix=f"{split}_"))
        if not len(labels):
            continue
        raw = classification_metrics(softmax(logits), labels, classes, prefix="raw_")
        metrics[f"{split}_ece_uncalibrated"] = raw["raw_ece"]
        k = min(5, len(classes))
        top = np.argsort(-probs, axis=1)[:, :k]
        metrics[f"{split}_top5"] = float(np.mean((top == labels[:, None]).any(axis=1)))
        if split == "val":
            threshold = review_threshold(probs, labels, review_precision)
            metrics["review_threshold"] = threshold
        else:
            n = len(classes)
            confusion = np.zeros((n, n), dtype=np.int64)
            np.add.at(confusion, (labels, probs.argmax(axis=1)), 1)
            pairs = confused_pairs(confusion, classes)
            for pair in pairs:
                metrics[f"test_pair_recall_{metric_name(pair.true_class)}"] = pair.recall
    return FinalEvaluation(metrics, confusion, temperature, threshold, pairs)
