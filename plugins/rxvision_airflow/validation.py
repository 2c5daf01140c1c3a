"""The validate task as an operator, with a link to its JSON report in the task's page.

The link is a presigned GET of the report in S3 (valid for a week), made when the task
ends, on success and on failure alike: a failed validation is when on-call needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, BaseOperatorLink

from rxvision.pipeline.config import PipelineConfig, load_pipeline_config
from rxvision_airflow.connections import s3_env
from rxvision_airflow.task_runtime import rxvision_task

LINK_TTL_S = 7 * 24 * 3600


def presigned_get(uri: str, cfg: PipelineConfig, expires_s: int = LINK_TTL_S) -> str:
    """A time-limited HTTP(S) URL for an ``s3://`` object, signed with the connection's keys."""
    from rxvision.storage.s3 import S3Config, S3Store, parse_s3_uri

    env = s3_env(cfg.connections.s3)
    store = S3Store(
        S3Config(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3"),
            access_key=env.get("AWS_ACCESS_KEY_ID"),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
            region=env.get("AWS_DEFAULT_REGION"),
        )
        if env
        else None
    )
    bucket, key = parse_s3_uri(uri)
    return str(
        store.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s
        )
    )


class ValidationReportLink(BaseOperatorLink):
    """'Validation report' in the task's page: the report JSON in S3."""

    name = "Validation report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        uri = getattr(operator, "report_uri", None)
        if not uri or not str(uri).startswith("s3://"):
            return ""
        return presigned_get(str(uri), load_pipeline_config())


class ValidateSnapshotOperator(BaseOperator):
    """Validate a pulled snapshot (``rxvision.pipeline.nightly.validate_snapshot``); the
    report goes to ``report_uri`` whether the snapshot passes or not."""

    template_fields: Sequence[str] = ("snapshot_rev", "report_uri")
    operator_extra_links = (ValidationReportLink(),)

    def __init__(self, *, snapshot_rev: str, report_uri: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.snapshot_rev = snapshot_rev
        self.report_uri = report_uri

    def execute(self, context: Any) -> dict[str, Any]:
        from rxvision.pipeline import nightly

        self.log.info("validating %s; report: %s", self.snapshot_rev, self.report_uri)
        with rxvision_task(load_pipeline_config()):
            return nightly.validate_snapshot(self.snapshot_rev, self.report_uri)
