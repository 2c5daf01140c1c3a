#!/usr/bin/env bash
# GPU training throughput: ResNet-50 at 224 px, bf16-mixed + channels_last (the project's
# way) against fp32 + NCHW (the baseline), on synthetic pills. Writes a JSON file and
# prints a table of images/s (steady state: the median over steps, first few left out).
#
#   bench/gpu_train.sh                      # on a GPU machine
#   STEPS=5 ACCELERATOR=cpu IMG=64 ARCH=resnet18 BATCH=8 bench/gpu_train.sh   # smoke test
#
# Needs no network and no servers: random init (no pretrained weights), MLflow logs to a
# local store in a throwaway RXVISION_HOME.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
ARCH="${ARCH:-resnet50}"
IMG="${IMG:-224}"
BATCH="${BATCH:-128}"
STEPS="${STEPS:-60}"
WORKERS="${WORKERS:-8}"
ACCELERATOR="${ACCELERATOR:-gpu}"
PER_CLASS="${PER_CLASS:-200}"
OUT="${OUT:-$REPO/bench/results/gpu_train.json}"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export RXVISION_HOME="$WORK/home"
export MLFLOW_TRACKING_URI=""   # the local store under RXVISION_HOME
export NO_ALBUMENTATIONS_UPDATE=1

echo "drawing synthetic pills into $WORK/data ..." >&2
"$PY" - "$WORK/data" "$PER_CLASS" "$IMG" <<'EOF'
import sys
from pathlib import Path

from rxvision.data.synth import generate_dataset

if __name__ == "__main__":
    out, per_class, img = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    # at least 224 px: rxvision train validates a folder as the nightly does
    generate_dataset(out, classes=10, per_class=per_class, size=max(img, 224) + 32, seed=0)
EOF

run() {  # run NAME PRECISION CHANNELS_LAST
    local name="$1" precision="$2" channels_last="$3"
    echo "training: $name ($ARCH, $precision, channels_last=$channels_last) ..." >&2
    "$PY" -m rxvision.cli.train \
        --config "$REPO/configs/experiment.yaml" \
        --data "$WORK/data" \
        --run-id "bench-$name" \
        --summary "$WORK/$name.json" \
        model.architecture="$ARCH" \
        model.pretrained=false \
        model.fine_tuning.gradual_unfreeze=false \
        data.img_size="$IMG" \
        data.num_workers="$WORKERS" \
        training.batch_size="$BATCH" \
        training.max_steps="$STEPS" \
        training.val_every_n_epochs=1000 \
        trainer.accelerator="$ACCELERATOR" \
        trainer.devices=1 \
        trainer.precision="$precision" \
        trainer.channels_last="$channels_last" \
        checkpoint.every_n_steps=null \
        checkpoint.root="$WORK/checkpoints" \
        >"$WORK/$name.log" 2>&1 || { tail -40 "$WORK/$name.log" >&2; exit 1; }
}

run project bf16-mixed true
run baseline 32-true false

mkdir -p "$(dirname "$OUT")"
"$PY" - "$WORK" "$OUT" "$ARCH" "$IMG" "$BATCH" "$STEPS" "$ACCELERATOR" <<'EOF'
import json
import sys
from pathlib import Path

import torch

work, out = Path(sys.argv[1]), Path(sys.argv[2])
arch, img, batch, steps, accelerator = sys.argv[3:8]
rows = {}
for name in ("project", "baseline"):
    summary = json.loads((work / f"{name}.json").read_text())
    rows[name] = {
        "precision": summary["precision"],
        "images_per_s": summary["extra"]["samples_per_s"],
        "fit_seconds": summary["extra"]["fit_seconds"],
        "global_step": summary["global_step"],
    }
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
report = {
    "benchmark": "gpu_train",
    "device": device,
    "architecture": arch,
    "img_size": int(img),
    "batch_size": int(batch),
    "steps": int(steps),
    "accelerator": accelerator,
    "results": rows,
}
out.write_text(json.dumps(report, indent=2))
print(f"{arch} {img}px batch {batch} on {device}, {steps} steps")
print(f"{'run':<10} {'precision':<12} {'images/s':>10} {'fit s':>8}")
for name, row in rows.items():
    rate = row["images_per_s"]
    shown = f"{rate:10.1f}" if rate is not None else f"{'-':>10}"
    print(f"{name:<10} {row['precision']:<12} {shown} {row['fit_seconds']:8.1f}")
base, proj = rows["baseline"]["images_per_s"], rows["project"]["images_per_s"]
if base and proj:
    print(f"speed-up: {proj / base:.2f}x")
print(f"wrote {out}")
EOF
