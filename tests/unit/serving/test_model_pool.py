"""The model pool: the fallback when the primary cannot load or returns NaN
(the breaker opens), no model at all, and the fallback alias of a URI."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_fixtures import broken_model, loaded_model, loader_of, read_rows

from rxvision.serving.errors import ScoringError
from rxvision.serving.model_pool import fallback_for
from rxvision.serving.scoring_config import ScoringConfig
from rxvision.serving.scoring_run import score_batch

pytestmark = pytest.mark.unit


def test_primary_that_cannot_load_falls_back(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    output = tmp_path / "out"
    loader = loader_of({"models:/tiny@fallback": loaded_model("tiny/1")})
    manifest = score_batch(
        "models:/tiny@champion", str(image_dir), str(output), config=config, loader=loader
    )
    rows = read_rows(output)
    scored = [r for r in rows if not r["error"]]
    assert scored and all(r["scored_by"] == "fallback" for r in scored)
    assert all(r["model_version"] == "tiny/1" for r in scored)
    # the CLI has no retries: the fallback scores at once, and each row says why
    assert {r["fallback_reason"] for r in scored} == {
        "primary_load_failed: ConnectionError: registry unreachable for models:/tiny@champion"
    }
    assert manifest["metrics"]["fallback_count"] == 10
    assert manifest["models"]["primary"]["load_error"].startswith("ConnectionError")
    assert manifest["models"]["circuit"]["state"] == "open"


def test_nan_primary_opens_the_breaker(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    output = tmp_path / "out"
    loader = loader_of(
        {
            "models:/tiny@champion": broken_model("tiny/2"),
            "models:/tiny@fallback": loaded_model("tiny/1"),
        }
    )
    manifest = score_batch(
        "models:/tiny@champion", str(image_dir), str(output), config=config, loader=loader
    )
    rows = [r for r in read_rows(output) if not r["error"]]
    assert len(rows) == 10 and {r["scored_by"] for r in rows} == {"fallback"}
    assert {r["model_version"] for r in rows} == {"tiny/1"}
    # the batches the primary returned NaN for, then the batches the open breaker sent
    reasons = [r["fallback_reason"] for r in rows]
    assert reasons[0] == "primary_failed: non_finite_logits: NaN or inf logits"
    assert reasons[-1].startswith("circuit_open: error rate")
    circuit = manifest["models"]["circuit"]
    assert circuit["state"] == "open" and circuit["trips"] == 1
    assert "error rate" in circuit["reason"]


def test_no_model_at_all_commits_nothing(
    image_dir: Path, tmp_path: Path, config: ScoringConfig
) -> None:
    output = tmp_path / "out"
    with pytest.raises(ScoringError, match="no model can score"):
        score_batch(
            "models:/tiny@champion",
            str(image_dir),
            str(output),
            config=config,
            loader=loader_of({}),
        )
    assert not list((output / "shards").glob("*"))
    assert not (output / "_SUCCESS").exists()


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/pills@champion", "models:/pills@fallback"),
        ("models:/pills/3", "models:/pills@fallback"),
        ("models:/pills@fallback", None),
        ("models:/m-0123abc", None),
        ("runs:/abc/model", None),
    ],
)
def test_fallback_for(uri: str, expected: str | None) -> None:
    assert fallback_for(uri, "fallback") == expected
