"""A version's INT8 judgement read back from the tags its export set."""

from __future__ import annotations

import pytest

from rxvision.serving.exports import TAG
from rxvision.serving.int8_record import int8_judgement
from rxvision.serving.quantize import Int8Decision

pytestmark = pytest.mark.unit


def decision(refused: tuple[str, ...] = ()) -> Int8Decision:
    return Int8Decision(
        kept=not refused,
        top1_fp32=0.97,
        top1_int8=0.96,
        max_drop_points=1.0,
        path=None,
        ece_fp32=0.031,
        ece_int8=0.058 if refused else 0.035,
        silent_errors_fp32=1,
        silent_errors_int8=1,
        agreement=0.98,
        refused=refused,
    )


def test_a_kept_judged_model_scores_and_its_figures_read_back() -> None:
    judged = int8_judgement(decision().tags(TAG))
    assert judged is not None and judged["scores"] is True
    assert (judged["top1_int8"], judged["ece_int8"], judged["silent_errors_int8"]) == (
        "0.9600",
        "0.0350",
        "1",
    )
    assert "refused" not in judged


def test_a_refused_model_says_why_and_does_not_score() -> None:
    judged = int8_judgement(decision(("ECE +0.0270 (limit +0.02)",)).tags(TAG))
    assert judged is not None and judged["scores"] is False
    assert (judged["kept"], judged["refused"]) == ("false", "ECE +0.0270 (limit +0.02)")


def test_a_model_kept_on_top1_alone_does_not_score_and_none_tried_is_none() -> None:
    before_the_gate = {f"{TAG}.int8.kept": "true", f"{TAG}.int8.top1_int8": "0.9600"}
    judged = int8_judgement(before_the_gate)
    assert judged is not None and judged["scores"] is False and judged["kept"] == "true"
    assert int8_judgement({"rxvision.eval.top1": "0.97"}) is None
