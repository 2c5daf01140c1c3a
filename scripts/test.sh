#!/usr/bin/env bash
# Every test tier this machine can run, plus lint and types. Under CI=true a tier that
# cannot run is a failure, not a skip. Extra arguments go to pytest (e.g. -m unit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
# The docker and e2e tiers run the training image on a real engine: start dockerd and
# build the images when this machine can (under CI=true, a tier that cannot run fails).
if command -v dockerd >/dev/null 2>&1 || docker info >/dev/null 2>&1; then
  echo "== docker engine and images"
  if scripts/docker-engine.sh | grep -qx started; then
    # an engine this run started is stopped when the run ends
    trap 'scripts/docker-engine.sh stop' EXIT
  fi
  scripts/build-images.sh
fi
echo "== ruff check";        ruff check .
echo "== ruff format";       ruff format --check .
echo "== mypy rxvision";     mypy rxvision
echo "== pytest"
set +e
pytest "$@"
code=$?
set -e
if [ "$code" = 5 ]; then
  echo "test: pytest collected no tests: that is a failure here" >&2
  exit 1
fi
# The AWS resources as code (infra/aws): its own venv, since its pins clash with the lock.
# Skipped when pytest was given a selection (e.g. `scripts/test.sh -m unit`).
if [ "$#" = 0 ]; then
  echo "== infra/aws (CDK synth, template assertions, cfn-lint, checkov)"
  scripts/test-infra.sh || code=$?
fi
exit "$code"
