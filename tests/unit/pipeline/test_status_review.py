"""``rxvision status`` shows the latest scoring run's review gallery: where it is, how many
images wait, and a presigned link (in its JSON too)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from moto import mock_aws

from rxvision.cli.pipeline import _print_status
from rxvision.pipeline.status import latest_predictions
from rxvision.storage.s3 import S3Config, S3Store

pytestmark = pytest.mark.unit

LATEST = "s3://preds/latest.json"
GALLERY = "s3://preds/runs/r1/review/index.html"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Store]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3 = S3Store(S3Config(region="us-east-1"))
        s3.ensure_bucket("preds")
        yield s3


def pointer(**extra: object) -> bytes:
    record = {"uri": "s3://preds/runs/r1", "rows": 80, "error_rate": 0.0125, **extra}
    return json.dumps(record).encode()


def test_the_gallery_of_the_latest_run_with_a_presigned_link(store: S3Store) -> None:
    store.put_bytes(LATEST, pointer(review_uri=GALLERY, needs_review=3))
    found = latest_predictions(LATEST)
    assert found is not None
    assert (found["review_uri"], found["needs_review"]) == (GALLERY, 3)
    assert "runs/r1/review/index.html" in found["review_url"]
    assert "X-Amz-Signature=" in found["review_url"]


def test_a_run_published_before_galleries_has_none(store: S3Store) -> None:
    store.put_bytes(LATEST, pointer())
    found = latest_predictions(LATEST)
    assert found is not None and found["review_uri"] is None and found["review_url"] is None


def test_the_status_table_names_the_gallery_and_prints_the_link_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "https://s3.example/preds/runs/r1/review/index.html?X-Amz-Signature=" + "f" * 64
    predictions = {
        "uri": "s3://preds/runs/r1",
        "rows": 80,
        "error_rate": 0.0125,
        "review_uri": GALLERY,
        "needs_review": 3,
        "review_url": url,
    }
    _print_status({"predictions": predictions})
    out = capsys.readouterr().out
    assert "review gallery" in out and f"3 to review: {GALLERY}" in " ".join(out.split())
    assert f"open the review gallery (link valid 7 days): {url}\n" in out
