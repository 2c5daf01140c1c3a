"""The S3 buckets: encryption, versioning, public access, TLS, logging, lifecycle."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match
from rxvision_infra.storage import PURPOSES
from support import Synth, resources

BLOCK_ALL = {
    "BlockPublicAcls": True,
    "BlockPublicPolicy": True,
    "IgnorePublicAcls": True,
    "RestrictPublicBuckets": True,
}


def all_templates(default: Synth, with_mwaa: Synth) -> list[dict[str, Any]]:
    """Every template of both app variants (the DAGs bucket is in the MWAA stack)."""
    return [default.json("RxVision"), *(with_mwaa.json(s) for s in with_mwaa.stacks)]


def pipeline_bucket_ids(default: Synth) -> dict[str, str]:
    """Logical IDs of the four pipeline buckets, by purpose."""
    buckets = default.stacks["RxVision"].storage.buckets  # type: ignore[attr-defined]
    return {p: default.logical_id("RxVision", getattr(buckets, p)) for p in PURPOSES}


def test_main_stack_has_the_four_buckets_and_a_log_bucket(default: Synth) -> None:
    default.templates["RxVision"].resource_count_is("AWS::S3::Bucket", 5)
    assert set(pipeline_bucket_ids(default)) == {"data", "artifacts", "checkpoints", "predictions"}


def test_every_bucket_is_encrypted_versioned_private_and_retained(
    default: Synth, with_mwaa: Synth
) -> None:
    seen = 0
    for template in all_templates(default, with_mwaa):
        for logical_id, bucket in resources(template, "AWS::S3::Bucket").items():
            props = bucket["Properties"]
            rules = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            assert rules == [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}], (
                logical_id
            )
            assert props["VersioningConfiguration"] == {"Status": "Enabled"}, logical_id
            assert props["PublicAccessBlockConfiguration"] == BLOCK_ALL, logical_id
            assert props["OwnershipControls"]["Rules"] == [
                {"ObjectOwnership": "BucketOwnerEnforced"}
            ]
            assert bucket["DeletionPolicy"] == "Retain", logical_id
            assert props["LifecycleConfiguration"]["Rules"], logical_id
            seen += 1
    assert seen == 5 + 5 + 2  # main stack twice (both variants), DAGs and its log bucket


def test_every_bucket_denies_plain_http(default: Synth, with_mwaa: Synth) -> None:
    for template in all_templates(default, with_mwaa):
        buckets = resources(template, "AWS::S3::Bucket")
        policies = resources(template, "AWS::S3::BucketPolicy").values()
        enforced = {
            p["Properties"]["Bucket"]["Ref"]
            for p in policies
            for s in p["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny"
            and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        }
        assert enforced == set(buckets)


def test_pipeline_buckets_log_to_the_log_bucket(default: Synth) -> None:
    template = default.json("RxVision")
    log_id = default.logical_id(
        "RxVision",
        default.stacks["RxVision"].storage.log_bucket,  # type: ignore[attr-defined]
    )
    for purpose, logical_id in pipeline_bucket_ids(default).items():
        logging = template["Resources"][logical_id]["Properties"]["LoggingConfiguration"]
        assert logging == {"DestinationBucketName": {"Ref": log_id}, "LogFilePrefix": f"{purpose}/"}


def rules_by_id(template: dict[str, Any], logical_id: str) -> dict[str, dict[str, Any]]:
    """A bucket's lifecycle rules by their Id."""
    rules = template["Resources"][logical_id]["Properties"]["LifecycleConfiguration"]["Rules"]
    return {rule["Id"]: rule for rule in rules}


@pytest.mark.parametrize("purpose", PURPOSES)
def test_temporary_prefixes_and_multipart_uploads_expire(default: Synth, purpose: str) -> None:
    rules = rules_by_id(default.json("RxVision"), pipeline_bucket_ids(default)[purpose])
    for prefix in ("tmp/", "_tmp/"):
        rule = rules[f"expire-{prefix.strip('/')}"]
        assert rule["Prefix"] == prefix
        assert rule["ExpirationInDays"] == 7
        assert rule["Status"] == "Enabled"
    base = rules["versions-and-multipart"]
    assert base["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert base["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0


def test_checkpoints_expire_old_versions_and_old_objects(default: Synth) -> None:
    rules = rules_by_id(default.json("RxVision"), pipeline_bucket_ids(default)["checkpoints"])
    assert rules["versions-and-multipart"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7}
    assert rules["expire-old-checkpoints"]["ExpirationInDays"] == 30
    assert "Prefix" not in rules["expire-old-checkpoints"]


def test_data_is_never_expired(default: Synth) -> None:
    """Only scratch prefixes expire in the data bucket: snapshots are the training record."""
    rules = rules_by_id(default.json("RxVision"), pipeline_bucket_ids(default)["data"])
    expiring = {rid for rid, rule in rules.items() if "ExpirationInDays" in rule}
    assert expiring == {"expire-tmp", "expire-_tmp"}


def test_retention_and_names_follow_context(synth: Any) -> None:
    app = synth(bucket_prefix="acme-rx", checkpoint_retention_days="3", temp_retention_days="2")
    template = app.templates["RxVision"]
    for purpose in ("data", "artifacts", "checkpoints", "predictions", "access-logs"):
        template.has_resource_properties("AWS::S3::Bucket", {"BucketName": f"acme-rx-{purpose}"})
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": "acme-rx-checkpoints",
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [Match.object_like({"Id": "expire-old-checkpoints", "ExpirationInDays": 3})]
                )
            },
        },
    )
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": "acme-rx-data",
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [Match.object_like({"Id": "expire-tmp", "ExpirationInDays": 2})]
                )
            },
        },
    )


def test_default_bucket_names_are_generated(default: Synth) -> None:
    """Without ``bucket_prefix`` no global name is claimed (no collision on deploy)."""
    for bucket in resources(default.json("RxVision"), "AWS::S3::Bucket").values():
        assert "BucketName" not in bucket["Properties"]
