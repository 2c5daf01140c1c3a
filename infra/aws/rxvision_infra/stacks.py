"""The stacks: ``<prefix>`` (buckets, registries, roles) always, ``<prefix>Mwaa`` only
with ``-c mwaa=true``."""

from __future__ import annotations

from aws_cdk import App, Stack, Tags
from constructs import Construct

from rxvision_infra.airflow import MwaaStack
from rxvision_infra.config import InfraConfig
from rxvision_infra.registries import Registries
from rxvision_infra.roles import Roles
from rxvision_infra.storage import Storage


class RxVisionStack(Stack):
    """The resources every deployment has: buckets, ECR repositories and IAM roles. One
    stack, so that the roles' policies name the buckets without cross-stack exports that
    would pin the buckets in place."""

    def __init__(
        self, scope: Construct, construct_id: str, config: InfraConfig, **kwargs: object
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.storage = Storage(self, "Storage", config)
        self.registries = Registries(self, "Registries", config)
        self.roles = Roles(self, "Roles", config, self.storage.buckets)


def build_app(app: App, config: InfraConfig | None = None) -> list[Stack]:
    """Add RxVision's stacks to ``app`` (settings from its context unless given) and
    return them, the main stack first."""
    config = config or InfraConfig.from_app(app)
    main = RxVisionStack(
        app,
        config.stack_prefix,
        config,
        env=config.env,
        description="RxVision: S3 buckets, ECR repositories and least-privilege IAM roles",
    )
    stacks: list[Stack] = [main]
    if config.mwaa:
        stacks.append(
            MwaaStack(
                app,
                f"{config.stack_prefix}Mwaa",
                config,
                main.roles.worker,
                env=config.env,
                description="RxVision: managed Airflow (MWAA) environment and its VPC",
            )
        )
    for stack in stacks:
        Tags.of(stack).add("project", "rxvision")
    return stacks
