#!/usr/bin/env bash
# Install the AWS infra toolchain (infra/aws) apart from the main .venv: aws-cdk-lib,
# cfn-lint, checkov and pytest into .venv-infra (their pins, boto3 among them, clash with
# requirements.lock), and the aws-cdk CLI into infra/aws/node_modules. Idempotent: a no-op
# in well under a second when neither lock has changed since the last install.
#   RXVISION_PYTHON   the Python 3.11 to build the venv with (default: python3.11 or python3)
set -euo pipefail
cd "$(dirname "$0")/.."

py=${RXVISION_PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "install-infra: Python 3.11 is required ($py is $("$py" --version 2>&1))" >&2
  exit 1
fi
command -v npm >/dev/null || { echo "install-infra: npm (Node.js >= 20) is required" >&2; exit 1; }

start=$SECONDS
[ -x .venv-infra/bin/python ] || "$py" -m venv .venv-infra

stamp=.venv-infra/.rxvision-install
UV_VERSION=0.13.9
want=$({ cat infra/aws/requirements.lock; echo "uv $UV_VERSION --compile-bytecode"; } | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "install-infra: .venv-infra is up to date"
else
  echo "install-infra: installing infra/aws/requirements.lock into .venv-infra (~30 s cold)"
  # The lock is the whole closure (pip freeze --all): no resolving, --no-deps, then
  # `pip check` proves nothing is missing. uv installs it (as scripts/install.sh does,
  # compiling the bytecode that PYTHONDONTWRITEBYTECODE=1 would never cache).
  .venv-infra/bin/pip install -q --disable-pip-version-check "uv==$UV_VERSION" 2>&1 \
    | grep -v "^WARNING: Location" || true
  .venv-infra/bin/uv pip install -q --python .venv-infra/bin/python --no-deps --compile-bytecode \
    -r infra/aws/requirements.lock
  .venv-infra/bin/pip check --disable-pip-version-check \
    || { echo "install-infra: infra/aws/requirements.lock is incomplete" >&2; exit 1; }
  JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 .venv-infra/bin/python -c \
    'import aws_cdk, constructs, cfnlint, checkov, pytest' \
    || { echo "install-infra: .venv-infra is broken, see the installer's output above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

# npm ci only when package-lock.json changed since the last one (npm keeps its own copy of
# the installed tree's lock in node_modules/.package-lock.json; compare hashes to ours).
npm_stamp=infra/aws/node_modules/.rxvision-install
npm_want=$(sha256sum infra/aws/package-lock.json | cut -d' ' -f1)
if [ -x infra/aws/node_modules/.bin/cdk ] && [ -f "$npm_stamp" ] \
  && [ "$(cat "$npm_stamp")" = "$npm_want" ]; then
  echo "install-infra: infra/aws/node_modules is up to date"
else
  echo "install-infra: npm ci in infra/aws (the aws-cdk CLI)"
  (cd infra/aws && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
  echo "$npm_want" > "$npm_stamp"
fi
echo "install-infra: done in $((SECONDS - start)) s"
