"""Production gates: each criterion, named with its value and threshold."""

from __future__ import annotations

import numpy as np
import pytest

from rxvision.registry.gates import (
    ChampionBaseline,
    EvalSummary,
    GateConfig,
    ModelQualityError,
    classification_metrics,
    evaluate_gates,
    expected_calibration_error,
)

pytestmark = pytest.mark.unit

CONFIG = GateConfig(min_top1=0.8, min_class_recall=0.5, max_ece=0.1, max_top1_regression=0.01)


def metrics(top1: float = 0.9, ece: float = 0.05, recall: tuple[float, ...] = (0.9, 0.8)) -> dict:  # type: ignore[type-arg]
    out = {"val_top1": top1, "val_ece": ece, "val_loss": 0.3}
    out.update({f"val_recall_ndc-{i}": r for i, r in enumerate(recall)})
    return out


def check(
    values: dict,
    champion: ChampionBaseline | None = None,
    split: str | None = "s1",
    config: GateConfig = CONFIG,  # type: ignore[type-arg]
):  # type: ignore[no-untyped-def]
    return evaluate_gates(EvalSummary.from_metrics(values, config, split), config, champion)


def test_a_good_model_passes_every_criterion() -> None:
    report = check(metrics())
    assert report.passed
    assert [c.name for c in report.criteria] == [
        "min_top1",
        "min_class_recall",
        "max_ece",
        "max_top1_regression",
    ]
    assert report.tags()["gate.min_top1"] == "0.900000"


@pytest.mark.parametrize(
    ("values", "name", "text"),
    [
        (metrics(top1=0.62), "min_top1", "min_top1: 0.6200 (needs >= 0.8000) FAILED"),
        (
            metrics(recall=(0.9, 0.3)),
            "min_class_recall",
            "min_class_recall: 0.3000 (needs >= 0.5000) FAILED (worst class ndc-1; below: ndc-1)",
        ),
        (metrics(ece=0.2), "max_ece", "max_ece: 0.2000 (needs <= 0.1000) FAILED"),
    ],
)
def test_each_failing_criterion_is_named_with_value_and_threshold(
    values: dict,
    name: str,
    text: str,  # type: ignore[type-arg]
) -> None:
    report = check(values)
    assert [c.name for c in report.failed] == [name]
    with pytest.raises(ModelQualityError) as caught:
        report.raise_for_failure("runs:/r/model")
    assert text in str(caught.value)
    assert caught.value.failed[0].threshold == getattr(CONFIG, name)
    assert caught.value.exit_code == 7


def test_every_failure_is_reported_not_just_the_first() -> None:
    report = check(metrics(top1=0.5, ece=0.5, recall=(0.1, 0.2)))
    assert {c.name for c in report.failed} == {"min_top1", "min_class_recall", "max_ece"}


def test_missing_metrics_fail_by_name() -> None:
    report = check({"val_loss": 1.0})
    failed = {c.name: c.describe() for c in report.failed}
    assert failed["min_top1"] == "min_top1: metric 'val_top1' is missing"
    assert "val_recall_*" in failed["min_class_recall"]


def test_worse_than_champion_on_the_same_split_fails() -> None:
    champion = ChampionBaseline("3", top1=0.95, split="s1")
    report = check(metrics(top1=0.90), champion)
    [failed] = report.failed
    assert failed.name == "max_top1_regression"
    assert failed.value == pytest.approx(0.05)
    assert "champion v3 top-1 0.9500" in failed.describe()
    assert check(metrics(top1=0.945), champion).passed  # within the margin


def test_champion_on_another_split_is_skipped_or_fails() -> None:
    champion = ChampionBaseline("3", top1=0.99, split="old")
    skipped = check(metrics(), champion)
    assert skipped.passed and "not comparable" in skipped.criteria[-1].detail
    strict = GateConfig(**{**CONFIG.model_dump(), "on_split_mismatch": "fail"})
    assert [c.name for c in check(metrics(), champion, config=strict).failed] == [
        "max_top1_regression"
    ]


def test_no_champion_passes() -> None:
    assert check(metrics(), None).criteria[-1].detail == "no champion yet"


def test_classification_metrics_use_the_training_keys() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    out = classification_metrics(probs, labels, ["ndc a", "ndc-b"])
    assert out["val_top1"] == 0.75
    assert out["val_recall_ndc_a"] == 1.0
    assert out["val_recall_ndc-b"] == pytest.approx(2 / 3)
    summary = EvalSummary.from_metrics(out, CONFIG)
    assert summary.min_class_recall == ("ndc-b", pytest.approx(2 / 3))


def test_ece_of_a_calibrated_and_an_overconfident_model() -> None:
    confidence = np.full(10, 0.7)
    assert expected_calibration_error(confidence, np.arange(10) < 7) == pytest.approx(0.0)
    assert expected_calibration_error(np.ones(4), np.array([1, 0, 0, 0], bool)) == pytest.approx(
        0.75
    )
