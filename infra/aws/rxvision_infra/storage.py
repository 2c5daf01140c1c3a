"""The S3 buckets: data, artifacts, checkpoints and predictions, plus the bucket that
receives their server access logs.

Encryption is S3-managed (SSE-S3), not KMS: the objects are pill photos, model weights and
predictions with no patient data; SSE-S3 costs nothing per request (a nightly training run
reads every image, and KMS would bill each one), needs no key policy kept in step with the
IAM roles, and lets the downstream team read predictions with IAM alone. Access logs must
be SSE-S3 anyway: S3 cannot deliver server access logs to a KMS-encrypted bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import CfnOutput, Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from rxvision_infra.compliance import skip_checkov
from rxvision_infra.config import InfraConfig

# Purposes of the four pipeline buckets, in the order the local stack creates them
# (configs/stack.yaml: rxvision-data, -artifacts, -checkpoints, -predictions).
PURPOSES = ("data", "artifacts", "checkpoints", "predictions")

# Scratch prefixes at the top of a bucket, written by crashed or interrupted runs only.
TEMP_PREFIXES = ("tmp/", "_tmp/")

# How long an overwritten or deleted version stays recoverable, per bucket: the data and
# the artifacts are the record of what a model was trained on and what it is.
NONCURRENT_DAYS = {"data": 90, "artifacts": 90, "checkpoints": 7, "predictions": 30}

LOG_RETENTION_DAYS = 365


@dataclass(frozen=True)
class BucketSet:
    """The pipeline's buckets by purpose."""

    data: s3.Bucket
    artifacts: s3.Bucket
    checkpoints: s3.Bucket
    predictions: s3.Bucket

    def all(self) -> list[s3.Bucket]:
        """The four buckets, in ``PURPOSES`` order."""
        return [self.data, self.artifacts, self.checkpoints, self.predictions]


class Storage(Construct):
    """The four pipeline buckets and their access-log bucket."""

    def __init__(self, scope: Construct, construct_id: str, config: InfraConfig) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.log_bucket = access_log_bucket(self, "AccessLogs", self._name("access-logs"))
        made = {purpose: self._bucket(purpose) for purpose in PURPOSES}
        self.buckets = BucketSet(**made)
        for purpose, bucket in made.items():
            CfnOutput(self, f"{purpose.capitalize()}BucketName", value=bucket.bucket_name)

    def _name(self, purpose: str) -> str | None:
        """A physical name only when ``bucket_prefix`` is set: bucket names are global,
        and generated ones never collide with another account's."""
        prefix = self.config.bucket_prefix
        return f"{prefix}-{purpose}" if prefix else None

    def _bucket(self, purpose: str) -> s3.Bucket:
        return s3.Bucket(
            self,
            f"{purpose.capitalize()}Bucket",
            bucket_name=self._name(purpose),
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix=f"{purpose}/",
            # the data and the models outlive a stack: deleting one never deletes them
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=lifecycle_rules(purpose, self.config),
        )


def access_log_bucket(scope: Construct, construct_id: str, name: str | None) -> s3.Bucket:
    """A bucket that receives S3 server access logs, kept ``LOG_RETENTION_DAYS``."""
    bucket = s3.Bucket(
        scope,
        construct_id,
        bucket_name=name,
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        versioned=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        removal_policy=RemovalPolicy.RETAIN,
        lifecycle_rules=[
            s3.LifecycleRule(
                id="expire-old-logs",
                expiration=Duration.days(LOG_RETENTION_DAYS),
                noncurrent_version_expiration=Duration.days(30),
                abort_incomplete_multipart_upload_after=Duration.days(1),
            )
        ],
    )
    skip_checkov(
        bucket,
        {
            "CKV_AWS_18": "This is the access-log target itself: logging it into itself would "
            "log every log delivery, and logging it elsewhere only moves the question.",
        },
    )
    return bucket


def lifecycle_rules(purpose: str, config: InfraConfig) -> list[s3.LifecycleRule]:
    """Lifecycle of one pipeline bucket: incomplete multipart uploads and the scratch
    prefixes expire everywhere, old versions after ``NONCURRENT_DAYS``, and checkpoints
    (rebuilt by the next nightly run) after ``checkpoint_retention_days``."""
    temp_days = Duration.days(config.temp_retention_days)
    rules = [
        s3.LifecycleRule(
            id="versions-and-multipart",
            noncurrent_version_expiration=Duration.days(NONCURRENT_DAYS[purpose]),
            abort_incomplete_multipart_upload_after=Duration.days(1),
        )
    ]
    rules += [
        s3.LifecycleRule(
            id=f"expire-{prefix.strip('/')}",
            prefix=prefix,
            expiration=temp_days,
            noncurrent_version_expiration=Duration.days(1),
        )
        for prefix in TEMP_PREFIXES
    ]
    if purpose == "checkpoints":
        rules.append(
            s3.LifecycleRule(
                id="expire-old-checkpoints",
                expiration=Duration.days(config.checkpoint_retention_days),
            )
        )
    return rules
