"""The CLI's tables show every cell whole on a narrow terminal: a run id, an S3 URI or a
snapshot tag wider than its column folds onto the next line instead of ending in an
ellipsis."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from rxvision.cli import pipeline as pipeline_cli
from rxvision.cli.tables import whole_cell_table

pytestmark = pytest.mark.unit

RUN_ID = "asset_triggered__2026-12-07T18:00:12.355379+00:00_bdixDgOZ"
URI = "s3://rxvision-predictions/runs/asset_triggered__2026-12-07T18_00_12.355379_00_00_bdixDgOZ"


def column_text(rendered: str, column: int) -> str:
    """One column's cells over every row, joined with the spaces taken out (a folded word
    comes back whole)."""
    cells = [line.split("│")[column + 1] for line in rendered.splitlines() if line.count("│") > 2]
    return "".join("".join(cells).split())


def test_a_word_wider_than_its_column_folds_and_is_never_cut() -> None:
    table = whole_cell_table("version", "run", title="models")
    table.add_row("1", "c96820194a2e4b22a638d01b0865b259")
    out = io.StringIO()
    Console(file=out, width=30).print(table)
    rendered = out.getvalue()
    assert "…" not in rendered
    assert "c96820194a2e4b22a638d01b0865b259" in column_text(rendered, 1)
    assert len(rendered.splitlines()) > 5  # folded onto more than one line


def test_status_shows_the_run_and_the_predictions_whole_at_80_columns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pipeline_cli, "console", Console(width=80))
    pipeline_cli._print_status(
        {
            "champion": {
                "name": "rxvision-pill-classifier",
                "version": "3",
                "metrics": {"test_top1": 0.99583, "test_images": 78.0},
                "int8": None,
            },
            "dag_runs": {"rxvision_batch_scoring": {"state": "success", "run_id": RUN_ID}},
            "predictions": {"uri": URI, "rows": 81, "error_rate": 0.0123, "review_uri": None},
        }
    )
    rendered = capsys.readouterr().out
    assert "…" not in rendered
    state = column_text(rendered, 1)
    assert f"success({RUN_ID})" in state
    assert f"81rows,errorrate0.0123:{URI}" in state
    # a count reads as one, the rates to three places
    assert "test_top10.996,test_images78)" in state


def test_a_night_with_nothing_new_reads_as_a_success_that_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pipeline_cli, "console", Console(width=300))
    reason = "the champion already trained on this snapshot (resolve_snapshot skipped the run)"
    nightly = {"state": "success", "run_id": "manual__1", "outcome": "nothing new"}
    refused = {"state": "success", "run_id": "manual__2", "outcome": "not promoted"}
    pipeline_cli._print_status(
        {
            "dag_runs": {
                "rxvision_nightly_retrain": {**nightly, "reason": reason},
                "other_nightly": {**refused, "failed_gates": "min_top1: 0.62 FAILED"},
            }
        }
    )
    rendered = capsys.readouterr().out
    assert f"success, nothing new: {reason} (manual__1)" in rendered
    assert "not promoted: min_top1: 0.62 FAILED (manual__2)" in rendered
