"""The ECR repositories: scan on push, immutable tags, lifecycle."""

from __future__ import annotations

import json
from typing import Any

from support import Synth, resources


def repositories(app: Synth) -> dict[str, dict[str, Any]]:
    """The main stack's repositories by name."""
    found = resources(app.json("RxVision"), "AWS::ECR::Repository").values()
    return {r["Properties"]["RepositoryName"]: r for r in found}


def test_one_repository_per_image(default: Synth) -> None:
    assert set(repositories(default)) == {"rxvision-train", "rxvision-score", "rxvision-airflow"}


def test_repositories_scan_on_push_and_are_immutable(default: Synth) -> None:
    for name, repo in repositories(default).items():
        props = repo["Properties"]
        assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}, name
        assert props["ImageTagMutability"] == "IMMUTABLE", name
        # no EncryptionConfiguration means ECR's AES-256 (KMS would be named here)
        assert props.get("EncryptionConfiguration", {"EncryptionType": "AES256"}) == {
            "EncryptionType": "AES256"
        }, name
        assert repo["DeletionPolicy"] == "Retain", name


def test_lifecycle_expires_untagged_and_keeps_the_newest(synth: Any) -> None:
    for app, keep in ((synth(), 30), (synth(ecr_keep_images="5"), 5)):
        for name, repo in repositories(app).items():
            policy = json.loads(repo["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])
            selections = [(r["rulePriority"], r["selection"]) for r in policy["rules"]]
            assert selections == [
                (
                    1,
                    {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countNumber": 7,
                        "countUnit": "days",
                    },
                ),
                (2, {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep}),
            ], name
            assert all(r["action"] == {"type": "expire"} for r in policy["rules"])


def test_repository_names_follow_the_prefix(synth: Any) -> None:
    assert set(repositories(synth(name_prefix="rxv2"))) == {
        "rxv2-train",
        "rxv2-score",
        "rxv2-airflow",
    }
