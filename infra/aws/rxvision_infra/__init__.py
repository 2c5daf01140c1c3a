"""RxVision's AWS resources as CDK v2 constructs: buckets, image registries, IAM roles and
the optional managed Airflow (MWAA) environment. ``build_app`` wires them into stacks."""

from rxvision_infra.stacks import build_app

__all__ = ["build_app"]
