"""The ``model`` and ``score`` command groups answer --help and parse their options."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from typer.testing import CliRunner

from rxvision.cli import model as model_cli
from rxvision.cli import score as score_cli

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("command", ["register", "promote", "rollback", "list", "export"])
def test_model_commands_have_help(command: str) -> None:
    result = CliRunner().invoke(model_cli.app, [command, "--help"])
    assert result.exit_code == 0, result.output


def test_score_help_and_required_options() -> None:
    runner = CliRunner()
    assert runner.invoke(score_cli.app, ["--help"]).exit_code == 0
    missing = runner.invoke(score_cli.app, ["--input", "s3://b/in"])
    assert missing.exit_code != 0 and "--output" in missing.output


def test_score_makes_one_library_call(tmp_path: Path) -> None:
    manifest = {
        "rows": 3,
        "shards": [{}],
        "output_uri": "s3://b/out",
        "metrics": {"errors": 1, "fallback_count": 0, "images_per_s": 2.0},
    }
    with mock.patch("rxvision.serving.scoring_run.score_batch", return_value=manifest) as call:
        result = CliRunner().invoke(
            score_cli.app,
            [
                "--model",
                "models:/pills@champion",
                "--input",
                "s3://b/in",
                "--output",
                "s3://b/out",
                "--summary",
                str(tmp_path / "s.json"),
                "batch_size=8",
            ],
        )
    assert result.exit_code == 0, result.output
    args, kwargs = call.call_args
    assert args == ("models:/pills@champion", "s3://b/in", "s3://b/out")
    assert kwargs["config"].batch_size == 8
    assert (tmp_path / "s.json").is_file()


def test_register_needs_a_summary_or_a_model_uri() -> None:
    result = CliRunner().invoke(model_cli.app, ["register"])
    assert result.exit_code != 0
    assert "give --summary" in str(result.exception)


def test_score_passes_allow_empty_and_require_primary() -> None:
    manifest = {
        "rows": 0,
        "shards": [],
        "output_uri": "s3://b/out",
        "metrics": {"errors": 0, "fallback_count": 0, "images_per_s": 0.0},
    }
    args = ["--input", "s3://b/in", "--output", "s3://b/out"]
    with mock.patch("rxvision.serving.scoring_run.score_batch", return_value=manifest) as call:
        runner = CliRunner()
        assert runner.invoke(score_cli.app, args).exit_code == 0
        default = call.call_args.kwargs
        assert (default["allow_empty"], default["fallback_on_load_failure"]) == (False, True)
        flagged = runner.invoke(score_cli.app, [*args, "--allow-empty", "--require-primary"])
        assert flagged.exit_code == 0, flagged.output
        chosen = call.call_args.kwargs
        assert (chosen["allow_empty"], chosen["fallback_on_load_failure"]) == (True, False)


def test_no_cache_turns_reuse_off_and_the_count_is_printed() -> None:
    manifest = {
        "rows": 3,
        "cached": 2,
        "shards": [{}],
        "output_uri": "s3://b/out",
        "metrics": {"errors": 0, "fallback_count": 0, "images_per_s": 1.0},
    }
    args = ["--input", "s3://b/in", "--output", "s3://b/out"]
    with mock.patch("rxvision.serving.scoring_run.score_batch", return_value=manifest) as call:
        runner = CliRunner()
        default = runner.invoke(score_cli.app, args)
        assert default.exit_code == 0 and "2 from the cache" in default.output
        assert call.call_args.kwargs["config"].cache.reuse is True
        assert runner.invoke(score_cli.app, [*args, "--no-cache"]).exit_code == 0
        assert call.call_args.kwargs["config"].cache.reuse is False
