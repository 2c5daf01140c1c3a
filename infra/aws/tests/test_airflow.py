"""The optional MWAA stack: absent by default, complete with ``-c mwaa=true``."""

from __future__ import annotations

from typing import Any

import pytest
from rxvision_infra.config import _flag
from support import Synth, resources


def test_mwaa_is_off_by_default(default: Synth) -> None:
    assert list(default.stacks) == ["RxVision"]
    for kind in ("AWS::MWAA::Environment", "AWS::EC2::VPC"):
        assert not resources(default.json("RxVision"), kind)


@pytest.mark.parametrize(
    ("value", "on"),
    [("true", True), ("1", True), ("yes", True), ("false", False), ("", False), (None, False)],
)
def test_flag_values(value: str | None, on: bool) -> None:
    assert _flag(value) is on


def test_flag_adds_the_mwaa_stack(with_mwaa: Synth) -> None:
    assert list(with_mwaa.stacks) == ["RxVision", "RxVisionMwaa"]
    assert not resources(with_mwaa.json("RxVision"), "AWS::MWAA::Environment")


def environment(app: Synth) -> dict[str, Any]:
    """The MWAA environment resource."""
    (env,) = resources(app.json("RxVisionMwaa"), "AWS::MWAA::Environment").values()
    return env


def test_environment_wiring(with_mwaa: Synth) -> None:
    template = with_mwaa.json("RxVisionMwaa")
    stack = with_mwaa.stacks["RxVisionMwaa"]
    env = environment(with_mwaa)
    props = env["Properties"]
    assert props["Name"] == "rxvision-airflow"
    assert props["AirflowVersion"] == {"Ref": "AirflowVersion"}
    assert props["WebserverAccessMode"] == "PRIVATE_ONLY"
    assert props["DagS3Path"] == "dags"
    assert props["SourceBucketArn"] == {
        "Fn::GetAtt": [with_mwaa.logical_id("RxVisionMwaa", stack.dags_bucket), "Arn"]  # type: ignore[attr-defined]
    }
    # the execution role is the main stack's Airflow worker role
    worker_id = with_mwaa.logical_id("RxVision", with_mwaa.stacks["RxVision"].roles.worker)  # type: ignore[attr-defined]
    assert worker_id in str(props["ExecutionRoleArn"])
    # MWAA validates its permissions at creation: the policy must exist first
    policy_id = with_mwaa.logical_id("RxVisionMwaa", stack.execution_policy)  # type: ignore[attr-defined]
    assert policy_id in env["DependsOn"]
    network = props["NetworkConfiguration"]
    assert len(network["SubnetIds"]) == 2
    private = {
        sid
        for sid, subnet in resources(template, "AWS::EC2::Subnet").items()
        if {"Key": "aws-cdk:subnet-type", "Value": "Private"} in subnet["Properties"]["Tags"]
    }
    assert {ref["Ref"] for ref in network["SubnetIds"]} == private
    logs = props["LoggingConfiguration"]
    assert len(logs) == 5
    assert all(module == {"Enabled": True, "LogLevel": "INFO"} for module in logs.values())


def test_airflow_version_is_a_parameter(synth: Any) -> None:
    template = synth(mwaa="true").json("RxVisionMwaa")
    assert template["Parameters"]["AirflowVersion"]["Default"] == "3.0.6"
    other = synth(mwaa="true", mwaa_airflow_version="2.10.3").json("RxVisionMwaa")
    assert other["Parameters"]["AirflowVersion"]["Default"] == "2.10.3"


def test_security_group_admits_only_itself(with_mwaa: Synth) -> None:
    template = with_mwaa.json("RxVisionMwaa")
    (group_id,) = resources(template, "AWS::EC2::SecurityGroup")
    group = template["Resources"][group_id]["Properties"]
    assert "SecurityGroupIngress" not in group
    (ingress,) = resources(template, "AWS::EC2::SecurityGroupIngress").values()
    assert ingress["Properties"]["SourceSecurityGroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}
    assert ingress["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}


def test_execution_policy_is_attached_to_the_worker_role_only(with_mwaa: Synth) -> None:
    stack = with_mwaa.stacks["RxVisionMwaa"]
    policy_id = with_mwaa.logical_id("RxVisionMwaa", stack.execution_policy)  # type: ignore[attr-defined]
    policy = with_mwaa.json("RxVisionMwaa")["Resources"][policy_id]["Properties"]
    (role,) = policy["Roles"]
    assert "AirflowWorkerRole" in str(role)
    sids = {s["Sid"] for s in policy["PolicyDocument"]["Statement"]}
    assert "sts:AssumeRole" not in str(policy["PolicyDocument"])
    assert {"ReadDags", "WriteLogs", "CeleryQueues", "PublishMetrics"} <= sids
    by_sid = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    # the one "*" resource with a write action is fenced by its namespace
    assert by_sid["PutMetrics"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "AmazonMWAA"}
    }


def test_vpc_flow_logs_go_to_s3(with_mwaa: Synth) -> None:
    (flow,) = resources(with_mwaa.json("RxVisionMwaa"), "AWS::EC2::FlowLog").values()
    assert flow["Properties"]["LogDestinationType"] == "s3"
    assert not resources(with_mwaa.json("RxVisionMwaa"), "AWS::Logs::LogGroup")
