"""The scoring DAG's publish task as an operator, with a link to the run's review gallery.

``publish`` finalises the run (``rxvision.pipeline.scoring.publish``), which writes the
pharmacist's review gallery (``<output>/review/index.html``) beside the predictions. The
"Review gallery" link in the task's page is a presigned GET of it (valid for a week),
made when the task ends; empty when the run has none (the task failed, or the gallery
could not be written: the run's ``_manifest.json`` says why under ``review``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, BaseOperatorLink

from rxvision.pipeline.config import load_pipeline_config
from rxvision_airflow.alerting import report_circuit
from rxvision_airflow.task_runtime import rxvision_task
from rxvision_airflow.validation import presigned_get


class ReviewGalleryLink(BaseOperatorLink):
    """'Review gallery' in the publish task's page: the run's gallery page in S3."""

    name = "Review gallery"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        uri = getattr(operator, "review_uri", None)
        if not uri or not str(uri).startswith("s3://"):
            return ""
        return presigned_get(str(uri), load_pipeline_config())


class PublishScoringOperator(BaseOperator):
    """Finalise a scoring run (manifest, review gallery, ``_SUCCESS``), move
    ``latest_uri`` forward and report the breaker's switches as an incident; returns
    ``publish``'s record (with ``review_uri``) and ``circuit``. ``planned`` is the plan
    task's output (one item per shard)."""

    template_fields: Sequence[str] = ("planned", "latest_uri", "output_uri")
    operator_extra_links = (ReviewGalleryLink(),)

    def __init__(
        self,
        *,
        planned: Any,
        latest_uri: str,
        output_uri: str,
        allow_empty: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.planned = planned
        self.latest_uri = latest_uri
        self.output_uri = output_uri
        self.allow_empty = allow_empty
        self.review_uri: str | None = None  # set by execute, read by the link

    def execute(self, context: Any) -> dict[str, Any]:
        from rxvision.pipeline import scoring

        cfg = load_pipeline_config()
        run_id = str(context["run_id"])
        with rxvision_task(cfg, "scoring"):
            result = scoring.publish(
                list(self.planned or []),
                self.latest_uri,
                dag_run_id=run_id,
                output=self.output_uri,
                allow_empty=self.allow_empty,
            )
        self.review_uri = result.get("review_uri")
        self.log.info("review gallery: %s", self.review_uri or "none written")
        # the breaker's switches: an incident that auto-recovery resolves
        result["circuit"] = report_circuit(result, self.dag_id, run_id, cfg)
        return result
