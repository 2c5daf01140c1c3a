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
    compare_on_same_images,
    evaluate_gates,
    expected_calibration_error,
)

pytestmark = pytest.mark.unit

CONFIG = GateConfig(min_top1=0.8, min_class_recall=0.5, max_ece=0.1, max_top1_regression=0.01)


def metrics(top1: float = 0.9, ece: float = 0.05, recall: tuple[float, ...] = (0.9, 0.8)) -> dict:  # type: ignore[type-arg]
    out = {"test_top1": top1, "test_ece": ece, "val_top1": 0.99, "val_loss": 0.3}
    out.update({f"test_recall_ndc-{i}": r for i, r in enumerate(recall)})
    return out


def check(
    values: dict,
    champion: ChampionBaseline | None = None,
    split: str | None = "s1",
    config: GateConfig = CONFIG,  # type: ignore[type-arg]
    classes: tuple[str, ...] | None = None,
):  # type: ignore[no-untyped-def]
    summary = EvalSummary.from_metrics(values, config, split, classes=classes)
    return evaluate_gates(summary, config, champion)


def test_defaults_gate_the_test_split_and_fail_split_mismatch() -> None:
    config = GateConfig()
    assert (config.top1_key, config.ece_key, config.recall_prefix) == (
        "test_top1",
        "test_ece",
        "test_recall_",
    )
    assert config.on_split_mismatch == "fail"
    assert config.min_class_recall == 0.80
    # validation metrics alone are not enough: the test metrics are what is gated
    report = evaluate_gates(EvalSummary.from_metrics({"val_top1": 0.99}, config), config)
    assert "metric 'test_top1' is missing" in report.criteria[0].describe()


def test_a_good_model_passes_every_criterion() -> None:
    report = check(metrics())
    assert report.passed
    assert [c.name for c in report.criteria] == [
        "min_top1",
        "min_class_recall",
        "max_ece",
        "min_pair_recall",
        "max_top1_regression",
    ]
    assert report.tags()["gate.min_top1"] == "0.900000"
    assert "no confused pair" in report.criteria[3].describe()


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
    assert failed["min_top1"] == "min_top1: metric 'test_top1' is missing"
    assert "test_recall_*" in failed["min_class_recall"]


def test_a_class_without_test_images_fails_by_name() -> None:
    classes = ("ndc-0", "ndc-1", "ndc 2 (blue)", "ndc-3")
    report = check(metrics(recall=(0.9, 0.95)), classes=classes)
    [failed] = report.failed
    assert failed.name == "min_class_recall"
    assert failed.value == 0.9  # the worst measured class is still reported
    assert "no test image of: ndc 2 (blue), ndc-3" in failed.describe()
    # the class name is matched through metric_name: "ndc 2 (blue)" -> ndc_2_blue_
    seen = {**metrics(recall=(0.9, 0.95)), "test_recall_ndc_2_blue_": 0.9, "test_recall_ndc-3": 1}
    assert check(seen, classes=classes).passed
    # no recall metric at all, but a class list: each class is named
    nothing = check({"test_top1": 0.9, "test_ece": 0.01}, classes=("a", "b"))
    assert nothing.failed[0].describe() == "min_class_recall: no test image of: a, b"
    # without a class list the unmeasured classes are invisible (as before)
    assert check(metrics(recall=(0.9, 0.95))).passed


def test_worse_than_champion_on_the_same_split_fails() -> None:
    champion = ChampionBaseline("3", top1=0.95, split="s1")
    report = check(metrics(top1=0.90), champion)
    [failed] = report.failed
    assert failed.name == "max_top1_regression"
    assert failed.value == pytest.approx(0.05)
    assert "champion v3 top-1 0.9500 vs this model 0.9000" in failed.describe()
    assert check(metrics(top1=0.945), champion).passed  # within the margin


def test_champion_on_another_split_fails_unless_skipped() -> None:
    champion = ChampionBaseline("3", top1=0.99, split="old")
    failed = check(metrics(), champion)
    assert [c.name for c in failed.failed] == ["max_top1_regression"]
    assert "not comparable" in failed.failed[0].detail
    assert "comparator" in failed.failed[0].detail
    lenient = GateConfig(**{**CONFIG.model_dump(), "on_split_mismatch": "skip"})
    assert check(metrics(), champion, config=lenient).passed
    # a champion without a registered top-1 is not comparable either
    unknown = check(metrics(), ChampionBaseline("3", top1=None, split="s1"))
    assert [c.name for c in unknown.failed] == ["max_top1_regression"]


def test_worse_than_champion_on_the_same_images_is_refused_with_both_numbers() -> None:
    champion = compare_on_same_images(
        "3", {"test_top1": 0.95, "images": 120}, {"test_top1": 0.80, "images": 120}, CONFIG
    )
    # the registered top-1s would pass (0.99 here); the same-images scores decide
    report = check(metrics(top1=0.99), champion)
    [failed] = report.failed
    assert failed.name == "max_top1_regression"
    assert failed.value == pytest.approx(0.15)
    assert failed.images == 120
    with pytest.raises(ModelQualityError) as caught:
        report.raise_for_failure("models:/m-1")
    assert (
        "max_top1_regression: 0.1500 (needs <= 0.0100) FAILED "
        "(champion v3 top-1 0.9500 vs this model 0.8000 on 120 test images)"
    ) in str(caught.value)


def test_one_image_in_a_hundred_meets_a_one_percent_limit() -> None:
    champion = compare_on_same_images(
        "3", {"test_top1": 0.95, "images": 100}, {"test_top1": 0.94, "images": 100}, CONFIG
    )
    assert check(metrics(), champion).passed  # 0.95 - 0.94 is 0.010000000000000009
    two = compare_on_same_images(
        "3", {"test_top1": 0.95, "images": 100}, {"test_top1": 0.93, "images": 100}, CONFIG
    )
    assert not check(metrics(), two).passed


@pytest.mark.parametrize(
    ("champion", "challenger", "reason"),
    [
        ({"test_top1": 0.9, "images": 50}, {"test_top1": 0.9, "images": 60}, "on 50 images"),
        ({"test_top1": 0.9}, {"test_top1": 0.9, "images": 60}, "no 'images' count for champion"),
        ({"test_top1": 0.9, "images": 5}, {"val_top1": 0.9, "images": 5}, "no 'test_top1'"),
        ({"test_top1": 0.9, "images": 0}, {"test_top1": 0.9, "images": 0}, "no test image"),
    ],
)
def test_an_unusable_comparison_fails_the_gate(
    champion: dict[str, float], challenger: dict[str, float], reason: str
) -> None:
    baseline = compare_on_same_images("3", champion, challenger, CONFIG)
    [failed] = check(metrics(), baseline).failed
    assert failed.name == "max_top1_regression"
    assert "champion v3 could not be compared" in failed.describe()
    assert reason in failed.describe()


def test_no_champion_passes() -> None:
    assert check(metrics(), None).criteria[-1].detail == "no champion yet"


def test_classification_metrics_use_the_training_keys() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    out = classification_metrics(probs, labels, ["ndc a", "ndc-b"])
    assert out["val_top1"] == 0.75
    assert out["val_recall_ndc_a"] == 1.0
    assert out["val_recall_ndc-b"] == pytest.approx(2 / 3)
    summary = EvalSummary.from_metrics(out, GateConfig(recall_prefix="val_recall_"))
    assert summary.min_class_recall == ("ndc-b", pytest.approx(2 / 3))
    test = classification_metrics(probs, labels, ["ndc a", "ndc-b"], prefix="test_")
    assert EvalSummary.from_metrics(test, CONFIG, classes=["ndc a", "ndc-b"]).top1 == 0.75


def test_ece_of_a_calibrated_and_an_overconfident_model() -> None:
    confidence = np.full(10, 0.7)
    assert expected_calibration_error(confidence, np.arange(10) < 7) == pytest.approx(0.0)
    assert expected_calibration_error(np.ones(4), np.array([1, 0, 0, 0], bool)) == pytest.approx(
        0.75
    )


def test_the_pair_gate_refuses_a_model_that_confuses_a_pair_and_names_it() -> None:
    values = {
        **metrics(recall=(0.95, 0.85, 1.0)),
        # ndc-1's errors go mostly to ndc-0: a look-alike pair at 0.85
        "test_pair_recall_ndc-1": 0.85,
        "test_pair_recall_ndc-0": 0.95,
    }
    config = GateConfig(min_class_recall=0.8, max_ece=0.1, min_pair_recall=0.9)
    summary = EvalSummary.from_metrics(
        values, config, "s1", pairs={"ndc-1": "ndc-0", "ndc-0": "ndc-1"}
    )
    report = evaluate_gates(summary, config)
    assert [c.name for c in report.failed] == ["min_pair_recall"]
    text = report.failed[0].describe()
    assert "min_pair_recall: 0.8500 (needs >= 0.9000) FAILED" in text
    assert "worst pair ndc-1 taken for ndc-0 (0.85)" in text
    assert "below: ndc-1 taken for ndc-0 (0.85)" in text
    # the same pair above the limit passes
    values["test_pair_recall_ndc-1"] = 0.92
    assert evaluate_gates(EvalSummary.from_metrics(values, config, "s1"), config).passed
