"""The ECR repositories for the project's images (``docker/``): training, scoring and the
Airflow image with the project installed."""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, RemovalPolicy
from aws_cdk import aws_ecr as ecr
from constructs import Construct

from rxvision_infra.compliance import skip_checkov
from rxvision_infra.config import InfraConfig

IMAGES = ("train", "score", "airflow")

UNTAGGED_DAYS = 7


class Registries(Construct):
    """One immutable, scanned-on-push repository per image."""

    def __init__(self, scope: Construct, construct_id: str, config: InfraConfig) -> None:
        super().__init__(scope, construct_id)
        self.repositories: dict[str, ecr.Repository] = {
            image: self._repository(image, config) for image in IMAGES
        }
        for image, repo in self.repositories.items():
            CfnOutput(self, f"{image.capitalize()}RepositoryUri", value=repo.repository_uri)

    def _repository(self, image: str, config: InfraConfig) -> ecr.Repository:
        repo = ecr.Repository(
            self,
            f"{image.capitalize()}Repository",
            repository_name=f"{config.name_prefix}-{image}",
            image_scan_on_push=True,
            # a tag names one build forever: the model registry records the image tag a
            # champion was trained with, and a rerun must get the same bits
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            encryption=ecr.RepositoryEncryption.AES_256,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=lifecycle_rules(config),
        )
        skip_checkov(
            repo,
            {
                "CKV_AWS_136": "Images hold code and public base layers, no data or secrets: "
                "ECR's AES-256 encryption at rest is enough, and a KMS key would have to "
                "be granted to every puller (ECS, Batch, MWAA) for no gain.",
            },
        )
        return repo


def lifecycle_rules(config: InfraConfig) -> list[ecr.LifecycleRule]:
    """Untagged layers (failed or superseded pushes) go after a week; of the tagged
    images the newest ``ecr_keep_images`` stay, enough to roll back many nights."""
    return [
        ecr.LifecycleRule(
            rule_priority=1,
            description="expire untagged images",
            tag_status=ecr.TagStatus.UNTAGGED,
            max_image_age=Duration.days(UNTAGGED_DAYS),
        ),
        ecr.LifecycleRule(
            rule_priority=2,
            description=f"keep the newest {config.ecr_keep_images} images",
            tag_status=ecr.TagStatus.ANY,
            max_image_count=config.ecr_keep_images,
        ),
    ]
