"""Deployment settings, read from CDK context (``-c key=value`` or ``cdk.json``) and the
environment, so that one app synthesizes offline and deploys to any account."""

from __future__ import annotations

import os
from dataclasses import dataclass

from aws_cdk import App, Environment

# MWAA's supported versions lag the open-source releases; this is the default of the
# ``AirflowVersion`` CloudFormation parameter, which a deploy can override.
DEFAULT_MWAA_AIRFLOW_VERSION = "3.0.6"


@dataclass(frozen=True)
class InfraConfig:
    """Everything the stacks take from outside the code."""

    stack_prefix: str = "RxVision"
    name_prefix: str = "rxvision"
    bucket_prefix: str | None = None
    account: str | None = None
    region: str | None = None
    mwaa: bool = False
    mwaa_airflow_version: str = DEFAULT_MWAA_AIRFLOW_VERSION
    worker_service_principal: str = "ecs-tasks.amazonaws.com"
    checkpoint_retention_days: int = 30
    temp_retention_days: int = 7
    ecr_keep_images: int = 30

    @property
    def env(self) -> Environment | None:
        """The stacks' environment; ``None`` (env-agnostic) unless both account and region
        are given, so that ``cdk synth`` needs no credentials."""
        if self.account and self.region:
            return Environment(account=self.account, region=self.region)
        return None

    @classmethod
    def from_app(cls, app: App) -> InfraConfig:
        """Read the context of ``app``, falling back to ``CDK_DEPLOY_ACCOUNT`` and
        ``CDK_DEPLOY_REGION`` for the environment (not the CLI's ``CDK_DEFAULT_*``: those
        follow whichever credentials happen to be loaded)."""

        def ctx(key: str) -> str | None:
            value = app.node.try_get_context(key)
            return None if value is None else str(value)

        defaults = cls()
        return cls(
            stack_prefix=ctx("stack_prefix") or defaults.stack_prefix,
            name_prefix=ctx("name_prefix") or defaults.name_prefix,
            bucket_prefix=ctx("bucket_prefix"),
            account=ctx("account") or os.environ.get("CDK_DEPLOY_ACCOUNT"),
            region=ctx("region") or os.environ.get("CDK_DEPLOY_REGION"),
            mwaa=_flag(ctx("mwaa")),
            mwaa_airflow_version=ctx("mwaa_airflow_version") or defaults.mwaa_airflow_version,
            worker_service_principal=(
                ctx("worker_service_principal") or defaults.worker_service_principal
            ),
            checkpoint_retention_days=int(
                ctx("checkpoint_retention_days") or defaults.checkpoint_retention_days
            ),
            temp_retention_days=int(ctx("temp_retention_days") or defaults.temp_retention_days),
            ecr_keep_images=int(ctx("ecr_keep_images") or defaults.ecr_keep_images),
        )


def _flag(value: str | None) -> bool:
    """A context flag: ``-c mwaa=true`` arrives as the string ``"true"``."""
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}
