"""The scoring DAG's publish operator: one ``rxvision`` call, its template fields, and the
"Review gallery" link (a presigned GET of the run's gallery, registered with the plugin)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

import rxvision_airflow.scoring as scoring_plugin
from rxvision.pipeline import scoring
from rxvision_airflow.scoring import PublishScoringOperator, ReviewGalleryLink

pytestmark = pytest.mark.unit

GALLERY = "s3://rxvision-predictions/runs/manual__1/review/index.html"


def make() -> PublishScoringOperator:
    return PublishScoringOperator(
        task_id="publish",
        planned=[{"shard": {"shard_id": "shard-00000"}}],
        latest_uri="s3://rxvision-predictions/latest.json",
        output_uri="s3://rxvision-predictions/runs/manual__1",
        allow_empty=True,
    )


def test_templates_and_link() -> None:
    op = make()
    assert set(op.template_fields) == {"planned", "latest_uri", "output_uri"}
    assert [link.name for link in op.operator_extra_links] == ["Review gallery"]


def test_execute_publishes_once_and_keeps_the_gallery_for_the_link(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[Any, ...]] = []

    def publish(items: list[dict[str, Any]], latest: str, **kwargs: Any) -> dict[str, Any]:
        calls.append((items, latest, kwargs))
        return {"uri": "s3://rxvision-predictions/runs/manual__1", "review_uri": GALLERY}

    monkeypatch.setattr(scoring, "publish", publish)
    monkeypatch.setattr(scoring_plugin, "report_circuit", lambda *a, **k: {"switches": 0})
    op = make()
    result = op.execute({"run_id": "manual__1"})
    assert calls == [
        (
            [{"shard": {"shard_id": "shard-00000"}}],
            "s3://rxvision-predictions/latest.json",
            {
                "dag_run_id": "manual__1",
                "output": "s3://rxvision-predictions/runs/manual__1",
                "allow_empty": True,
            },
        )
    ]
    assert op.review_uri == GALLERY and result["circuit"] == {"switches": 0}


def test_the_link_is_a_presigned_get_of_the_gallery(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "AIRFLOW_CONN_RXVISION_S3": '{"conn_type": "aws", "login": "AKIAEXAMPLE", '
        '"password": "secret", "extra": {"endpoint_url": "http://127.0.0.1:9"}}'
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    op = make()
    link = ReviewGalleryLink()
    assert link.get_link(op, ti_key=None) == ""  # nothing published yet
    op.review_uri = GALLERY
    url = urlparse(link.get_link(op, ti_key=None))
    assert (url.scheme, url.netloc) == ("http", "127.0.0.1:9")
    assert url.path == "/rxvision-predictions/runs/manual__1/review/index.html"
    assert "X-Amz-Signature" in parse_qs(url.query)
    op.review_uri = "/tmp/run/review/index.html"  # a local run: no link to sign
    assert link.get_link(op, ti_key=None) == ""


def test_the_plugin_registers_the_link() -> None:
    from rxvision_plugin import RxVisionPlugin

    assert "Review gallery" in [link.name for link in RxVisionPlugin.operator_extra_links]
