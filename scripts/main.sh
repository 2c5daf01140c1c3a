#!/usr/bin/env bash
# The main job: install, start the Docker engine and build the training image, bring the
# local stack up (SeaweedFS, MLflow, Airflow, statsd), prove each server works, then run
# the nightly DAG end to end on the built-in synthetic dataset through the real scheduler
# (training in the container) and the scoring DAG its new champion triggers. Idempotent:
# a second run finds the champion already trained on the snapshot and scores again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
rx=.venv/bin/rxvision
if ! scripts/build-images.sh; then
  echo "WARNING: no Docker engine here: the train task runs as a local subprocess" \
       "(RXVISION_TRAIN_LAUNCHER=local). Install docker.io to train in the container." >&2
  export RXVISION_TRAIN_LAUNCHER=local
fi
$rx stack up
$rx stack check
$rx pipeline run
echo
echo "Done (state in ${RXVISION_HOME:-$PWD/var}). Look at:"
$rx stack status | tail -n 4
echo "Status any time:      .venv/bin/rxvision status"
echo "Use it from a shell:  eval \"\$(.venv/bin/rxvision stack env)\""
echo "Stop it:              .venv/bin/rxvision stack down"
