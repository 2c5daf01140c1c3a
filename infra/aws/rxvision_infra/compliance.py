"""Scanner suppressions written into the template itself, next to the resource they
concern, so that a reader of the template sees every skipped check with its reason."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnResource
from constructs import IConstruct


def skip_checkov(construct: IConstruct, reasons: dict[str, str]) -> None:
    """Skip checkov checks (``{check id: reason}``) on the construct's CloudFormation
    resource, as ``Metadata.checkov.skip``; a reason is required for every check."""
    resource = _cfn_resource(construct)
    metadata: dict[str, Any] = dict(resource.cfn_options.metadata or {})
    checkov = dict(metadata.get("checkov", {}))
    skips = list(checkov.get("skip", []))
    for check_id, reason in sorted(reasons.items()):
        if not reason.strip():
            raise ValueError(f"checkov skip {check_id} needs a reason")
        skips.append({"id": check_id, "comment": reason})
    checkov["skip"] = skips
    metadata["checkov"] = checkov
    resource.cfn_options.metadata = metadata


def skip_cfn_lint(construct: IConstruct, reasons: dict[str, str]) -> None:
    """Ignore cfn-lint rules (``{rule id: reason}``) on the construct's resource:
    ``Metadata.cfn-lint.config.ignore_checks``, with the reasons beside it under
    ``rxvision:cfn-lint-reasons`` (cfn-lint's own key has no room for them)."""
    resource = _cfn_resource(construct)
    metadata: dict[str, Any] = dict(resource.cfn_options.metadata or {})
    for rule, reason in reasons.items():
        if not reason.strip():
            raise ValueError(f"cfn-lint skip {rule} needs a reason")
    metadata["cfn-lint"] = {"config": {"ignore_checks": sorted(reasons)}}
    metadata["rxvision:cfn-lint-reasons"] = dict(sorted(reasons.items()))
    resource.cfn_options.metadata = metadata


def _cfn_resource(construct: IConstruct) -> CfnResource:
    """The L1 resource of an L2 construct (or the construct itself when it is one)."""
    if isinstance(construct, CfnResource):
        return construct
    child = construct.node.default_child
    if not isinstance(child, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource")
    return child
