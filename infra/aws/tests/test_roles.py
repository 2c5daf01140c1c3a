"""IAM: each component's role allows exactly its actions on exactly its resources."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rxvision_infra.storage import PURPOSES
from support import Synth, arn, objects, resources


def as_list(value: Any) -> list[Any]:
    """CloudFormation writes one action/resource bare and several as a list."""
    return value if isinstance(value, list) else [value]


def normalized(statements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Statements by Sid, with Action and Resource always lists."""
    out = {}
    for s in statements:
        entry = {
            "Effect": s["Effect"],
            "Action": sorted(as_list(s["Action"])),
            "Resource": sorted_resources(as_list(s["Resource"])),
        }
        if "Condition" in s:
            entry["Condition"] = s["Condition"]
        out[s["Sid"]] = entry
    return out


def sorted_resources(values: list[Any]) -> list[Any]:
    """Resources in a canonical order (CDK sorts them; the order means nothing)."""
    return sorted(values, key=lambda v: json.dumps(v, sort_keys=True))


def allow(actions: list[str], resources_: list[Any], **extra: Any) -> dict[str, Any]:
    """An expected Allow statement."""
    return {
        "Effect": "Allow",
        "Action": sorted(actions),
        "Resource": sorted_resources(resources_),
        **extra,
    }


class Ids:
    """Logical IDs of the main stack's buckets and roles."""

    def __init__(self, app: Synth) -> None:
        stack = app.stacks["RxVision"]
        buckets = stack.storage.buckets  # type: ignore[attr-defined]
        roles = stack.roles  # type: ignore[attr-defined]
        self.bucket = {p: app.logical_id("RxVision", getattr(buckets, p)) for p in PURPOSES}
        self.training = app.logical_id("RxVision", roles.training)
        self.scoring = app.logical_id("RxVision", roles.scoring)
        self.worker = app.logical_id("RxVision", roles.worker)
        self.worker_policy = app.logical_id("RxVision", roles.worker_policy)


@pytest.fixture(scope="module")
def ids(default: Synth) -> Ids:
    return Ids(default)


def inline_statements(app: Synth, role_id: str) -> dict[str, dict[str, Any]]:
    """The statements of a role's inline policies."""
    role = app.json("RxVision")["Resources"][role_id]["Properties"]
    return normalized([s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]])


def test_training_role_statements_are_exact(default: Synth, ids: Ids) -> None:
    b = ids.bucket
    assert inline_statements(default, ids.training) == {
        "ListDataAndCheckpoints": allow(["s3:ListBucket"], [arn(b["data"]), arn(b["checkpoints"])]),
        "ReadData": allow(["s3:GetObject"], [objects(b["data"])]),
        "ReadWriteCheckpoints": allow(
            ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            [objects(b["checkpoints"])],
        ),
        "WriteArtifacts": allow(
            ["s3:PutObject", "s3:AbortMultipartUpload"], [objects(b["artifacts"])]
        ),
    }


def test_scoring_role_statements_are_exact(default: Synth, ids: Ids) -> None:
    b = ids.bucket
    assert inline_statements(default, ids.scoring) == {
        "ListModelsAndPredictions": allow(
            ["s3:ListBucket"], [arn(b["artifacts"]), arn(b["predictions"])]
        ),
        "ReadModels": allow(["s3:GetObject"], [objects(b["artifacts"])]),
        "ListIncoming": allow(
            ["s3:ListBucket"],
            [arn(b["data"])],
            Condition={"StringLike": {"s3:prefix": ["incoming/*"]}},
        ),
        "ReadIncoming": allow(["s3:GetObject"], [objects(b["data"], "incoming/*")]),
        "WritePredictions": allow(
            ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            [objects(b["predictions"])],
        ),
        "DeleteScoringTemp": allow(
            ["s3:DeleteObject"], [objects(b["predictions"], "runs/*/_tmp/*")]
        ),
    }


def test_worker_may_assume_the_two_roles_and_do_its_own_tasks_only(
    default: Synth, ids: Ids
) -> None:
    template = default.json("RxVision")
    policy = template["Resources"][ids.worker_policy]["Properties"]
    assert policy["Roles"] == [{"Ref": ids.worker}]
    b = ids.bucket
    assert normalized(policy["PolicyDocument"]["Statement"]) == {
        "AssumeComponentRoles": allow(["sts:AssumeRole"], [arn(ids.training), arn(ids.scoring)]),
        "ListData": allow(["s3:ListBucket"], [arn(b["data"])]),
        "ReadData": allow(["s3:GetObject"], [objects(b["data"])]),
        "WriteFeatures": allow(
            ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            [objects(b["data"], "features/*")],
        ),
        "ReportsAndAlerts": allow(
            ["s3:GetObject", "s3:PutObject"],
            [objects(b["artifacts"], "validation/*"), objects(b["artifacts"], "alerts/*")],
        ),
        "ReadTrainingSummaries": allow(["s3:GetObject"], [objects(b["artifacts"], "runs/*")]),
        "ListAlerts": allow(
            ["s3:ListBucket"],
            [arn(b["artifacts"])],
            Condition={"StringLike": {"s3:prefix": ["alerts/*"]}},
        ),
    }
    assert "Policies" not in template["Resources"][ids.worker]["Properties"]
    # no other policy in the stack is attached to the worker role
    attached = [
        pid
        for pid, p in resources(template, "AWS::IAM::Policy").items()
        if {"Ref": ids.worker} in p["Properties"].get("Roles", [])
    ]
    assert attached == [ids.worker_policy]


def trust(app: Synth, role_id: str, stack: str = "RxVision") -> list[dict[str, Any]]:
    """The assume-role policy statements of a role."""
    role = app.json(stack)["Resources"][role_id]["Properties"]
    return list(role["AssumeRolePolicyDocument"]["Statement"])


def test_component_roles_trust_only_the_worker_role(default: Synth, ids: Ids) -> None:
    for role_id in (ids.training, ids.scoring):
        assert trust(default, role_id) == [
            {
                "Action": "sts:AssumeRole",
                "Effect": "Allow",
                "Principal": {"AWS": arn(ids.worker)},
            }
        ]


def test_worker_trust_is_ecs_by_default_and_mwaa_with_the_flag(
    default: Synth, with_mwaa: Synth
) -> None:
    def services(app: Synth) -> set[str]:
        (statement,) = trust(app, Ids(app).worker)
        assert statement["Action"] == "sts:AssumeRole"
        return set(as_list(statement["Principal"]["Service"]))

    assert services(default) == {"ecs-tasks.amazonaws.com"}
    assert services(with_mwaa) == {
        "ecs-tasks.amazonaws.com",
        "airflow.amazonaws.com",
        "airflow-env.amazonaws.com",
    }


def policy_documents(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Every identity policy document in a template (roles' inline and IAM policies)."""
    docs = [
        p["Properties"]["PolicyDocument"] for p in resources(template, "AWS::IAM::Policy").values()
    ]
    for role in resources(template, "AWS::IAM::Role").values():
        docs += [p["PolicyDocument"] for p in role["Properties"].get("Policies", [])]
    return docs


def test_no_wildcard_action_anywhere(default: Synth, with_mwaa: Synth) -> None:
    templates = [default.json("RxVision")] + [with_mwaa.json(s) for s in with_mwaa.stacks]
    checked = 0
    for template in templates:
        for doc in policy_documents(template):
            for statement in doc["Statement"]:
                for action in as_list(statement["Action"]):
                    assert "*" not in action, (action, statement.get("Sid"))
                    checked += 1
    assert checked > 20


def test_component_roles_have_no_wildcard_resource(default: Synth, ids: Ids) -> None:
    template = default.json("RxVision")
    docs = [*policy_documents(template)]
    assert len(docs) == 3  # training, scoring (inline), worker (AWS::IAM::Policy)
    for doc in docs:
        for statement in doc["Statement"]:
            assert "*" not in as_list(statement["Resource"]), statement["Sid"]


def test_sts_assume_role_is_granted_only_to_the_worker(default: Synth, ids: Ids) -> None:
    grants = [
        statement
        for doc in policy_documents(default.json("RxVision"))
        for statement in doc["Statement"]
        if any(a.startswith("sts:") for a in as_list(statement["Action"]))
    ]
    assert [g["Sid"] for g in grants] == ["AssumeComponentRoles"]
