#!/usr/bin/env bash
# The AWS infra checks: install the infra toolchain, lint infra/aws with the main venv's
# ruff (when .venv has it), then the CDK tests: in-process template assertions, the real
# `cdk synth`, cfn-lint and checkov. Extra arguments go to pytest (e.g. -m "not cli").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-infra.sh

# Nothing phones home: no CDK version check, telemetry or notices, no checkov update
# check or guideline download, no EC2 metadata probe for credentials.
export CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
export AWS_EC2_METADATA_DISABLED=true BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true

if [ -x .venv/bin/ruff ]; then
  echo "== ruff check infra/aws";  .venv/bin/ruff check infra/aws
  echo "== ruff format infra/aws"; .venv/bin/ruff format --check infra/aws
else
  echo "test-infra: .venv/bin/ruff not found (run scripts/install.sh): lint skipped" >&2
fi
echo "== pytest infra/aws/tests"
.venv-infra/bin/pytest infra/aws/tests -q "$@"
