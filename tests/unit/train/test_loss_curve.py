"""The loss curve logged to MLflow: its legend names the curves drawn, and a run with
nothing to draw (no step logged yet) makes no matplotlib warning in the training log."""

from __future__ import annotations

import warnings

import pytest

from rxvision.train.tracking import loss_curve_figure

pytestmark = pytest.mark.unit


def legend_texts(figure: object) -> list[str]:
    texts: list[str] = []
    for ax in figure.axes:  # type: ignore[attr-defined]
        legend = ax.get_legend()
        if legend is not None:
            texts += [t.get_text() for t in legend.get_texts()]
    return texts


def test_the_legend_names_each_curve() -> None:
    figure = loss_curve_figure([(1, 0.9), (2, 0.7)], [(2, 0.8)], [(2, 0.5)])
    assert sorted(legend_texts(figure)) == ["train/loss", "val/loss", "val/top1"]


def test_an_empty_run_draws_no_legend_and_warns_nothing() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = loss_curve_figure([], [])
    assert [str(w.message) for w in caught] == []
    assert legend_texts(figure) == []
