#!/usr/bin/env bash
# Everything to measure on a GPU machine, in one go (under 8 minutes on one H100):
#   1. bench/gpu_train.sh: ResNet-50 training images/s, bf16-mixed + channels_last vs fp32
#      (the project's `rxvision train`, Lightning, the project's DataLoader);
#   2. bench/gpu_input.py: the project's DataLoader vs synthetic tensors already on the GPU
#      (is the input pipeline the bottleneck?), and scoring images/s.
# Results: bench/results/gpu_train.json, bench/results/gpu_input.json; copy the tables
# into BENCHMARKS.md with the machine's name.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
export NO_ALBUMENTATIONS_UPDATE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
STEPS="${STEPS:-60}" "$REPO/bench/gpu_train.sh"
"$PY" "$REPO/bench/gpu_input.py" --steps "${INPUT_STEPS:-40}" --workers "${WORKERS:-8}" "$@"
