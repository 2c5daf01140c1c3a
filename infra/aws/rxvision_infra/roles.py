"""IAM roles, one per component, each allowed exactly what that component does.

- training: reads the data bucket, reads and writes checkpoints (the trainer deletes the
  ones it rotates out), writes artifacts;
- scoring: reads models from the artifacts bucket and new images under ``incoming/`` of
  the data bucket, writes predictions (and deletes only its own ``_tmp/`` commit files);
- Airflow workers: what the tasks that run in the worker itself do (read the data bucket
  to resolve and pull snapshots; write the feature store under ``features/``; write
  validation reports and alert records, read training summaries, in the artifacts
  bucket), and assume the two roles above for the tasks that run as them (their
  connections name the role: ``role_arn``, see ``rxvision_airflow.connections``).

Actions are named one by one (no ``*``); resources are the buckets' ARNs or prefixes.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import CfnOutput
from aws_cdk import aws_iam as iam
from constructs import Construct

from rxvision_infra.config import InfraConfig
from rxvision_infra.storage import BucketSet

# Services that run an MWAA environment's components as its execution role.
MWAA_PRINCIPALS = ("airflow.amazonaws.com", "airflow-env.amazonaws.com")

# Scoring commits a shard by copying OUTPUT/_tmp/<shard>.<token>.parquet to
# OUTPUT/shards/<shard>.parquet and deleting the temporary key (rxvision/serving/shard.py),
# with OUTPUT = s3://<predictions>/runs/<run>; so its only deletes are under this pattern.
SCORING_TEMP_OBJECTS = "runs/*/_tmp/*"


def statement(sid: str, actions: Sequence[str], resources: Sequence[str]) -> iam.PolicyStatement:
    """An Allow statement with a Sid, so that tests and readers find it by name."""
    return iam.PolicyStatement(sid=sid, actions=list(actions), resources=list(resources))


def training_statements(buckets: BucketSet) -> list[iam.PolicyStatement]:
    """Training: read data, read/write checkpoints, write artifacts."""
    return [
        statement(
            "ListDataAndCheckpoints",
            ["s3:ListBucket"],
            [
                buckets.data.bucket_arn,
                buckets.checkpoints.bucket_arn,
            ],
        ),
        statement("ReadData", ["s3:GetObject"], [buckets.data.arn_for_objects("*")]),
        statement(
            "ReadWriteCheckpoints",
            ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            [buckets.checkpoints.arn_for_objects("*")],
        ),
        statement(
            "WriteArtifacts",
            ["s3:PutObject", "s3:AbortMultipartUpload"],
            [buckets.artifacts.arn_for_objects("*")],
        ),
    ]


def scoring_statements(buckets: BucketSet) -> list[iam.PolicyStatement]:
    """Scoring: read models and incoming images, write predictions."""
    list_incoming = statement("ListIncoming", ["s3:ListBucket"], [buckets.data.bucket_arn])
    list_incoming.add_condition("StringLike", {"s3:prefix": ["incoming/*"]})
    return [
        statement(
            "ListModelsAndPredictions",
            ["s3:ListBucket"],
            [
                buckets.artifacts.bucket_arn,
                buckets.predictions.bucket_arn,
            ],
        ),
        statement("ReadModels", ["s3:GetObject"], [buckets.artifacts.arn_for_objects("*")]),
        list_incoming,
        statement("ReadIncoming", ["s3:GetObject"], [buckets.data.arn_for_objects("incoming/*")]),
        statement(
            "WritePredictions",
            ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            [buckets.predictions.arn_for_objects("*")],
        ),
        statement(
            "DeleteScoringTemp",
            ["s3:DeleteObject"],
            [buckets.predictions.arn_for_objects(SCORING_TEMP_OBJECTS)],
        ),
    ]


def worker_statements(
    buckets: BucketSet, assumable: Sequence[iam.IRole]
) -> list[iam.PolicyStatement]:
    """Airflow workers: data prep and alerts in-process, assume exactly the component roles."""
    list_artifacts = statement("ListAlerts", ["s3:ListBucket"], [buckets.artifacts.bucket_arn])
    # `rxvision status` and the alert dedupe list the alert records only
    list_artifacts.add_condition("StringLike", {"s3:prefix": ["alerts/*"]})
    return [
        statement("AssumeComponentRoles", ["sts:AssumeRole"], [r.role_arn for r in assumable]),
        statement("ListData", ["s3:ListBucket"], [buckets.data.bucket_arn]),
        statement("ReadData", ["s3:GetObject"], [buckets.data.arn_for_objects("*")]),
        # the feature store commits an attempt's shards, then deletes the attempt's prefix
        statement(
            "WriteFeatures",
            ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            [buckets.data.arn_for_objects("features/*")],
        ),
        statement(
            "ReportsAndAlerts",
            ["s3:GetObject", "s3:PutObject"],
            [
                buckets.artifacts.arn_for_objects("validation/*"),
                buckets.artifacts.arn_for_objects("alerts/*"),
            ],
        ),
        statement(
            "ReadTrainingSummaries", ["s3:GetObject"], [buckets.artifacts.arn_for_objects("runs/*")]
        ),
        list_artifacts,
    ]


class Roles(Construct):
    """The training, scoring and Airflow worker roles."""

    def __init__(
        self, scope: Construct, construct_id: str, config: InfraConfig, buckets: BucketSet
    ) -> None:
        super().__init__(scope, construct_id)
        self.worker = iam.Role(
            self,
            "AirflowWorkerRole",
            description="RxVision Airflow workers: read data, assume the component roles",
            assumed_by=worker_principal(config),
        )
        # The component roles trust the worker role alone: a task gets their credentials
        # only through Airflow, never from the compute it happens to run on.
        self.training = iam.Role(
            self,
            "TrainingRole",
            description="RxVision training: read data, read/write checkpoints, write artifacts",
            assumed_by=iam.ArnPrincipal(self.worker.role_arn),
            inline_policies={
                "training": iam.PolicyDocument(statements=training_statements(buckets))
            },
        )
        self.scoring = iam.Role(
            self,
            "ScoringRole",
            description="RxVision scoring: read models and incoming images, write predictions",
            assumed_by=iam.ArnPrincipal(self.worker.role_arn),
            inline_policies={"scoring": iam.PolicyDocument(statements=scoring_statements(buckets))},
        )
        # A separate AWS::IAM::Policy, not an inline policy on the worker role: the
        # component roles' trust names the worker role and this policy names them, and
        # inline, that would be a dependency cycle in CloudFormation.
        self.worker_policy = iam.Policy(
            self,
            "AirflowWorkerPolicy",
            roles=[self.worker],
            statements=worker_statements(buckets, [self.training, self.scoring]),
        )
        for name, role in (
            ("Worker", self.worker),
            ("Training", self.training),
            ("Scoring", self.scoring),
        ):
            CfnOutput(self, f"{name}RoleArn", value=role.role_arn)


def worker_principal(config: InfraConfig) -> iam.IPrincipal:
    """Who runs the Airflow workers: the configured service (ECS tasks by default), and
    MWAA's services when the managed environment uses this role as its execution role."""
    services = [config.worker_service_principal]
    if config.mwaa:
        services += MWAA_PRINCIPALS
    return iam.CompositePrincipal(*(iam.ServicePrincipal(s) for s in services))
