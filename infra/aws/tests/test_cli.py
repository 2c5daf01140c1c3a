"""The real toolchain: the ``cdk`` CLI synthesizes the app from cdk.json, then cfn-lint and
checkov pass on every template. A canary template proves the scanners do fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import INFRA

pytestmark = pytest.mark.cli

BIN = Path(sys.executable).parent
CDK = INFRA / "node_modules" / ".bin" / "cdk"

# Nothing may phone home: no CDK version check, telemetry or notices, no jsii Node banner,
# no checkov update check or guideline download, no credentials (so the CLI never calls
# STS to find a default account) and no EC2 metadata probe.
OFFLINE_ENV = {
    "CDK_DISABLE_VERSION_CHECK": "1",
    "CDK_DISABLE_CLI_TELEMETRY": "true",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "BC_SKIP_MAPPING": "TRUE",
    "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
}
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")

# A bucket with no encryption, versioning, logging or public access block, and an invalid
# versioning status: cfn-lint and checkov must both report it.
CANARY = {
    "Resources": {
        "Canary": {
            "Type": "AWS::S3::Bucket",
            "Properties": {"VersioningConfiguration": {"Status": "Sometimes"}},
        }
    }
}


def run(args: list[str | Path], cwd: Path = INFRA) -> subprocess.CompletedProcess[str]:
    """Run a tool offline, capturing its output."""
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS} | OFFLINE_ENV
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def cdk_synth(outdir: Path, *context: str) -> list[Path]:
    """``cdk synth`` into ``outdir`` with ``-c`` context; the templates written."""
    assert CDK.exists(), f"{CDK} missing: run scripts/install-infra.sh"
    args: list[str | Path] = [CDK, "synth", "--no-notices", "--quiet", "-o", outdir]
    for item in context:
        args += ["-c", item]
    done = run(args)
    assert done.returncode == 0, done.stdout + done.stderr
    return sorted(outdir.glob("*.template.json"))


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Both stacks, synthesized by the CLI with the MWAA flag on."""
    return cdk_synth(tmp_path_factory.mktemp("cdk.out"), "mwaa=true")


def test_cli_synth_default_has_only_the_main_stack(tmp_path: Path) -> None:
    assert [t.name for t in cdk_synth(tmp_path)] == ["RxVision.template.json"]


def test_cli_synth_with_mwaa_flag(synthesized: list[Path]) -> None:
    assert [t.name for t in synthesized] == [
        "RxVision.template.json",
        "RxVisionMwaa.template.json",
    ]
    mwaa = json.loads(synthesized[1].read_text())
    kinds = {r["Type"] for r in mwaa["Resources"].values()}
    assert "AWS::MWAA::Environment" in kinds
    main = json.loads(synthesized[0].read_text())
    # versionReporting is off in cdk.json: no AWS::CDK::Metadata resource reports home
    assert "AWS::CDK::Metadata" not in {r["Type"] for r in main["Resources"].values()}


def test_cfn_lint_passes(synthesized: list[Path]) -> None:
    done = run([BIN / "cfn-lint", *synthesized])
    assert done.returncode == 0, done.stdout + done.stderr


def test_cfn_lint_fails_on_a_bad_template(tmp_path: Path) -> None:
    canary = tmp_path / "Canary.template.json"
    canary.write_text(json.dumps(CANARY))
    done = run([BIN / "cfn-lint", canary])
    assert done.returncode != 0
    assert "Sometimes" in done.stdout


def checkov(directory: Path) -> dict[str, Any]:
    """checkov's JSON report on ``directory``, with the project's .checkov.yaml."""
    done = run(
        [
            BIN / "checkov",
            "--config-file",
            INFRA / ".checkov.yaml",
            "-d",
            directory,
            "-o",
            "json",
        ]
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: failed checks
    report = json.loads(done.stdout)
    assert isinstance(report, dict), "one framework, one report"
    return report


def test_checkov_passes_and_every_skip_is_explained(synthesized: list[Path]) -> None:
    report = checkov(synthesized[0].parent)
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 100
    readme = (INFRA / "README.md").read_text()
    for check in results["skipped_checks"]:
        comment = check["check_result"].get("suppress_comment", "")
        assert len(comment) > 20, (check["check_id"], check["resource"])
        assert check["check_id"] in readme, f"{check['check_id']} is not in the README"


def test_checkov_fails_on_a_bad_template(tmp_path: Path) -> None:
    (tmp_path / "Canary.template.json").write_text(json.dumps(CANARY))
    failed = {c["check_id"] for c in checkov(tmp_path)["results"]["failed_checks"]}
    assert {"CKV_AWS_18", "CKV_AWS_21"} <= failed  # access logging, versioning
