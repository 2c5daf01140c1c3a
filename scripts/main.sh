#!/usr/bin/env bash
# The main job: install, bring the local stack up (SeaweedFS, MLflow, Airflow, statsd),
# prove each server works, and print where to look. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
rx=.venv/bin/rxvision
$rx stack up
$rx stack check
echo
echo "The stack is up (state in ${RXVISION_HOME:-$PWD/var}). Look at:"
$rx stack status | tail -n 4
echo "Use it from a shell:  eval \"\$(.venv/bin/rxvision stack env)\""
echo "Stop it:              .venv/bin/rxvision stack down"
