"""Helpers for the infra tests: the app synthesized in-process with cdk.json's context
(feature flags), so that these templates are the ones ``cdk synth`` writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import App, Stack
from aws_cdk.assertions import Template
from rxvision_infra import build_app

INFRA = Path(__file__).resolve().parents[1]


def cdk_json_context() -> dict[str, Any]:
    """The ``context`` block of cdk.json (feature flags the CLI would pass)."""
    return dict(json.loads((INFRA / "cdk.json").read_text())["context"])


class Synth:
    """One synthesized app: its stacks and their templates, by stack name."""

    def __init__(self, context: dict[str, Any]) -> None:
        app = App(context={**cdk_json_context(), **context})
        self.stacks: dict[str, Stack] = {s.stack_name: s for s in build_app(app)}
        self.templates: dict[str, Template] = {
            name: Template.from_stack(stack) for name, stack in self.stacks.items()
        }

    def json(self, stack: str) -> dict[str, Any]:
        """The template of ``stack`` as a dict."""
        return dict(self.templates[stack].to_json())

    def logical_id(self, stack: str, construct: Any) -> str:
        """The logical ID CloudFormation gets for an L2 construct's resource."""
        return self.stacks[stack].get_logical_id(construct.node.default_child)


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """Resources of one CloudFormation type, by logical ID."""
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def arn(logical_id: str) -> dict[str, Any]:
    """``Fn::GetAtt [id, Arn]``, as CDK renders a same-stack ARN."""
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def objects(logical_id: str, pattern: str = "*") -> dict[str, Any]:
    """A bucket's object ARN pattern, as ``Bucket.arn_for_objects`` renders it."""
    return {"Fn::Join": ["", [arn(logical_id), f"/{pattern}"]]}
