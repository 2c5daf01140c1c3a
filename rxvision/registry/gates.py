"""Production gates: what a trained model must show before it enters the registry.

Four criteria, thresholds from ``configs/registry.yaml`` (``gates:``), read on the
held-out TEST split (``test_*`` metrics: images never used to choose a checkpoint):

- ``min_top1``: test top-1 accuracy at least this;
- ``min_class_recall``: the recall of every class at least this (one weak product is a
  dispensing error waiting to happen, whatever the average says). Given the model's class
  list, a class with no recall metric (no test image) fails the criterion by name;
- ``max_ece``: expected calibration error at most this (the review queue trusts the
  confidence);
- ``max_top1_regression``: top-1 no more than this below the current champion's, on the
  same images. With a comparator (``compare_on_same_images``) both models are scored on
  the challenger's test images through the same path; without one, the champion's
  registered top-1 is compared when it was measured on the same split, and a pair from
  two different splits fails (or, with ``on_split_mismatch: skip``, passes unchecked).

``evaluate_gates`` returns every criterion with its value and threshold; a report with a
failure raises ``ModelQualityError`` naming each failed one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rxvision.errors import RxVisionError

ECE_BINS = 15  # as torchmetrics' MulticlassCalibrationError in rxvision.train.module
# float slack of the regression limit: 0.95 - 0.94 is 0.010000000000000009, and a drop of
# exactly one image in 100 must meet a 0.01 limit
EPSILON = 1e-9


class ModelQualityError(RxVisionError):
    """A model failed one or more production gates; nothing was registered."""

    exit_code = 7

    def __init__(self, subject: str, failed: Sequence[Criterion]) -> None:
        self.subject = subject
        self.failed = list(failed)
        reasons = "; ".join(c.describe() for c in self.failed)
        super().__init__(f"{subject} refused by the production gates: {reasons}")


class GateConfig(BaseModel):
    """Thresholds of the production criteria and the metric names they read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_top1: float = Field(0.80, ge=0, le=1)
    min_class_recall: float = Field(0.80, ge=0, le=1)
    max_ece: float = Field(0.15, ge=0, le=1)
    max_top1_regression: float = Field(0.01, ge=0, le=1)
    on_split_mismatch: Literal["skip", "fail"] = "fail"
    # metric keys of the held-out test split as rxvision.train.run reports them
    # (``test/top1`` -> ``test_top1``); validation metrics (``val_*``) are not gated
    top1_key: str = "test_top1"
    ece_key: str = "test_ece"
    recall_prefix: str = "test_recall_"
    # look-alikes: the recall of every class whose test errors go mostly to one other class
    min_pair_recall: float = Field(0.90, ge=0, le=1)
    pair_recall_prefix: str = "test_pair_recall_"


IMAGES_KEY = "images"  # a comparator's count of the images it scored


@dataclass(frozen=True)
class Criterion:
    """One criterion's outcome: its value against its threshold."""

    name: str
    value: float | None
    threshold: float
    passed: bool
    detail: str = ""
    images: int | None = None  # how many images the value was measured on, when known

    def describe(self) -> str:
        """``min_top1: 0.6200 < 0.8000`` (or the detail when there is no value)."""
        if self.value is None:
            return f"{self.name}: {self.detail}"
        op = {"min": ">=", "max": "<="}.get(self.name.split("_", 1)[0], "vs")
        verdict = "ok" if self.passed else "FAILED"
        text = f"{self.name}: {self.value:.4f} (needs {op} {self.threshold:.4f}) {verdict}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class EvalSummary:
    """The metrics the gates read, from one evaluation split, and the model's classes
    (empty when unknown)."""

    top1: float | None
    ece: float | None
    class_recall: dict[str, float]
    split: str | None = None
    classes: tuple[str, ...] = ()
    # recall of each class in a confused pair, and the class it is confused with
    pair_recall: dict[str, float] = field(default_factory=dict)
    pair_partner: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_metrics(
        cls,
        metrics: Mapping[str, float],
        config: GateConfig,
        split: str | None = None,
        classes: Sequence[str] | None = None,
        pairs: Mapping[str, str] | None = None,
    ) -> EvalSummary:
        """Pick top-1, ECE, per-class and pair recall out of a run's metrics; ``classes``
        (the model's class names) lets ``min_class_recall`` see a class that has no
        recall; ``pairs`` maps a confused class to the class it is taken for."""
        recall = {
            key.removeprefix(config.recall_prefix): float(value)
            for key, value in metrics.items()
            if key.startswith(config.recall_prefix)
        }
        pair_recall = {
            key.removeprefix(config.pair_recall_prefix): float(value)
            for key, value in metrics.items()
            if key.startswith(config.pair_recall_prefix)
        }
        top1 = metrics.get(config.top1_key)
        ece = metrics.get(config.ece_key)
        return cls(
            top1=None if top1 is None else float(top1),
            ece=None if ece is None else float(ece),
            class_recall=recall,
            split=split,
            classes=tuple(classes or ()),
            pair_recall=pair_recall,
            pair_partner={metric_name(k): v for k, v in (pairs or {}).items()},
        )

    @property
    def classes_without_recall(self) -> list[str]:
        """Classes of ``classes`` with no recall metric (no test image), in class order."""
        return [c for c in self.classes if metric_name(c) not in self.class_recall]

    @property
    def min_class_recall(self) -> tuple[str, float] | None:
        """The worst class and its recall."""
        if not self.class_recall:
            return None
        name = min(self.class_recall, key=lambda k: self.class_recall[k])
        return name, self.class_recall[name]


@dataclass(frozen=True)
class ChampionBaseline:
    """The current champion's top-1 and what it compares with.

    From the registry's tags: ``top1`` on ``split`` (compared with the challenger's own
    top-1 only when the splits match). From a comparator: ``top1`` and
    ``challenger_top1``, both models scored on the same ``images``; ``error`` when the
    comparison could not be made (the criterion fails)."""

    version: str
    top1: float | None
    split: str | None
    challenger_top1: float | None = None
    images: int | None = None
    error: str | None = None

    @property
    def rescored(self) -> bool:
        """Whether both models were scored on the same images (by a comparator)."""
        return self.challenger_top1 is not None or self.error is not None


def compare_on_same_images(
    version: str,
    champion: Mapping[str, float],
    challenger: Mapping[str, float],
    config: GateConfig,
) -> ChampionBaseline:
    """The baseline from a comparator's two scorings (champion ``version`` and this model,
    each ``{top1_key: ..., "images": N}``); an ``error`` baseline when either lacks its
    top-1 or image count, or the counts differ (then they were not the same images)."""
    key = config.top1_key
    problems = []
    for who, metrics in (("champion", champion), ("this model", challenger)):
        if metrics.get(key) is None:
            problems.append(f"no {key!r} for {who}")
        if metrics.get(IMAGES_KEY) is None:
            problems.append(f"no {IMAGES_KEY!r} count for {who}")
    if not problems:
        images, other = int(champion[IMAGES_KEY]), int(challenger[IMAGES_KEY])
        if images != other:
            problems.append(f"champion scored on {images} images, this model on {other}")
        elif images < 1:
            problems.append("no test image to compare on")
    if problems:
        return ChampionBaseline(version, None, None, error="; ".join(problems))
    return ChampionBaseline(
        version,
        top1=float(champion[key]),
        split=None,
        challenger_top1=float(challenger[key]),
        images=int(champion[IMAGES_KEY]),
    )


@dataclass(frozen=True)
class GateReport:
    """Every criterion's outcome."""

    criteria: list[Criterion] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every criterion passed."""
        return all(c.passed for c in self.criteria)

    @property
    def failed(self) -> list[Criterion]:
        """The criteria that failed."""
        return [c for c in self.criteria if not c.passed]

    def raise_for_failure(self, subject: str) -> None:
        """Raise ``ModelQualityError`` naming each failed criterion."""
        if not self.passed:
            raise ModelQualityError(subject, self.failed)

    def tags(self) -> dict[str, str]:
        """``gate.<name>`` tags with each value, for the registered version."""
        return {
            f"gate.{c.name}": "n/a" if c.value is None else f"{c.value:.6f}" for c in self.criteria
        }


def evaluate_gates(
    summary: EvalSummary, config: GateConfig, champion: ChampionBaseline | None = None
) -> GateReport:
    """Check ``summary`` against every criterion (all are evaluated, none short-circuits)."""
    return GateReport(
        [
            _check_top1(summary, config),
            _check_class_recall(summary, config),
            _check_ece(summary, config),
            _check_pair_recall(summary, config),
            _check_champion(summary, config, champion),
        ]
    )


def _missing(name: str, threshold: float, key: str) -> Criterion:
    return Criterion(name, None, threshold, False, f"metric {key!r} is missing")


def _check_top1(summary: EvalSummary, config: GateConfig) -> Criterion:
    if summary.top1 is None:
        return _missing("min_top1", config.min_top1, config.top1_key)
    return Criterion("min_top1", summary.top1, config.min_top1, summary.top1 >= config.min_top1)


def _check_class_recall(summary: EvalSummary, config: GateConfig) -> Criterion:
    name, limit = "min_class_recall", config.min_class_recall
    unseen = summary.classes_without_recall
    unseen_detail = f"no test image of: {', '.join(unseen)}" if unseen else ""
    worst = summary.min_class_recall
    if worst is None:
        if unseen:
            return Criterion(name, None, limit, False, unseen_detail)
        return _missing(name, limit, f"{config.recall_prefix}*")
    worst_class, value = worst
    below = sorted(k for k, v in summary.class_recall.items() if v < limit)
    parts = [unseen_detail] if unseen else []
    parts.append(f"worst class {worst_class}" + (f"; below: {', '.join(below)}" if below else ""))
    passed = value >= limit and not unseen
    return Criterion(name, value, limit, passed, "; ".join(parts))


def _check_pair_recall(summary: EvalSummary, config: GateConfig) -> Criterion:
    name, limit = "min_pair_recall", config.min_pair_recall
    if not summary.pair_recall:
        return Criterion(name, None, limit, True, "no confused pair on the test split")
    worst = min(summary.pair_recall, key=lambda k: summary.pair_recall[k])

    def pair(key: str) -> str:
        partner = summary.pair_partner.get(key)
        text = f"{key} taken for {partner}" if partner else key
        return f"{text} ({summary.pair_recall[key]:.2f})"

    below = sorted(k for k, v in summary.pair_recall.items() if v < limit)
    detail = f"worst pair {pair(worst)}" + (
        f"; below: {', '.join(pair(k) for k in below)}" if below else ""
    )
    value = summary.pair_recall[worst]
    return Criterion(name, value, limit, value >= limit, detail)


def _check_ece(summary: EvalSummary, config: GateConfig) -> Criterion:
    if summary.ece is None:
        return _missing("max_ece", config.max_ece, config.ece_key)
    return Criterion("max_ece", summary.ece, config.max_ece, summary.ece <= config.max_ece)


def _check_champion(
    summary: EvalSummary, config: GateConfig, champion: ChampionBaseline | None
) -> Criterion:
    name = "max_top1_regression"
    limit = config.max_top1_regression
    if champion is None:
        return Criterion(name, None, limit, True, "no champion yet")
    if champion.rescored:
        return _check_rescored(champion, limit)
    # the champion's registered top-1: comparable only when measured on the same split
    skip = config.on_split_mismatch == "skip"
    hint = "give a comparator to score both models on the same images"
    if champion.top1 is None or summary.top1 is None:
        who = "champion" if champion.top1 is None else "this model"
        detail = f"{who} has no top-1 to compare (champion v{champion.version}); {hint}"
        return Criterion(name, None, limit, skip, detail)
    if champion.split != summary.split or summary.split is None:
        detail = (
            f"champion v{champion.version} was evaluated on split {champion.split!r}, "
            f"this model on {summary.split!r}: not comparable; {hint}"
        )
        return Criterion(name, None, limit, skip, detail)
    drop = champion.top1 - summary.top1
    detail = (
        f"champion v{champion.version} top-1 {champion.top1:.4f} vs this model "
        f"{summary.top1:.4f}, each as registered, on split {summary.split}"
    )
    return Criterion(name, drop, limit, drop <= limit + EPSILON, detail)


def _check_rescored(champion: ChampionBaseline, limit: float) -> Criterion:
    name = "max_top1_regression"
    if champion.error is not None or champion.top1 is None or champion.challenger_top1 is None:
        detail = f"champion v{champion.version} could not be compared: {champion.error}"
        return Criterion(name, None, limit, False, detail)
    drop = champion.top1 - champion.challenger_top1
    detail = (
        f"champion v{champion.version} top-1 {champion.top1:.4f} vs this model "
        f"{champion.challenger_top1:.4f} on {champion.images} test images"
    )
    return Criterion(name, drop, limit, drop <= limit + EPSILON, detail, images=champion.images)


# --- metrics from predictions ------------------------------------------------------------


def metric_name(text: str) -> str:
    """A class name as a metric key part (as ``rxvision.train.module.metric_name``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], prefix: str = "val_"
) -> dict[str, float]:
    """Top-1, ECE (15 bins, L1) and per-class recall from predicted probabilities, under
    the same keys the training run logs, so that a champion can be re-scored on a
    challenger's split and compared like for like."""
    if len(labels) == 0:
        return {}
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    correct = predicted == labels
    metrics = {
        f"{prefix}top1": float(correct.mean()),
        f"{prefix}ece": expected_calibration_error(confidence, correct),
    }
    for index, name in enumerate(classes):
        mask = labels == index
        if mask.any():
            metrics[f"{prefix}recall_{metric_name(name)}"] = float(correct[mask].mean())
    return metrics


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Sum over equal-width confidence bins of |accuracy - confidence| weighted by size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    # right-closed bins as torchmetrics: a confidence of exactly 1.0 goes in the last bin
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)
