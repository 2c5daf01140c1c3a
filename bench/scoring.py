"""Scoring runtimes side by side: images/s and top-1 of eager, TorchScript, ONNX Runtime,
dynamic-quantized (the seed's ``quantize_dynamic``) and static INT8 (ONNX Runtime QDQ).

Every runtime scores the same preprocessed hold-out images (decoding is left out: this
measures the model), at batch sizes 1, 8 and 32, on this machine's CPU, each in a fresh
process (thread pools of one runtime must not slow another), in interleaved rounds. Without
``--model`` it first trains a ResNet-18 at 112 px briefly with ``rxvision.train`` on
synthetic pills (distinct products), into a local MLflow store under ``--work``.

    .venv/bin/python bench/scoring.py                       # train, then measure
    .venv/bin/python bench/scoring.py --model models:/m-... --tracking-uri sqlite:///...
        --holdout DIR                                       # measure a logged model

Writes ``--out`` (JSON) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # last: as bench/harness.py

from rxvision.data.synth import generate_dataset  # noqa: E402
from rxvision.serving.exports import export_onnx, export_torchscript  # noqa: E402
from rxvision.serving.image_folder import load_image_folder  # noqa: E402
from rxvision.serving.model_loading import load_model  # noqa: E402
from rxvision.serving.predictors import (  # noqa: E402
    EagerPredictor,
    OnnxPredictor,
    Predictor,
    TorchScriptPredictor,
)
from rxvision.serving.quantize import (  # noqa: E402
    dynamic_quantize,
    static_quantize_onnx,
    top1_accuracy,
)

log = logging.getLogger("bench.scoring")

BATCH_SIZES = (1, 8, 32)


def distinct_products(out: Path, products: int, per_class: int, size: int, seed: int) -> Path:
    """Synthetic pills of ``products`` products that differ in shape and colour (one of
    each look-alike pair, which only the imprint tells apart, is kept)."""
    result = generate_dataset(
        out, classes=2 * products, per_class=per_class, size=size, seed=seed, workers=2
    )
    for index, label in enumerate(result.labels):
        if index % 2:
            shutil.rmtree(out / label)
    (out / "manifest.parquet").unlink()
    return out


def train_model(work: Path, args: argparse.Namespace) -> tuple[str, str]:
    """A brief ResNet-18 run with ``rxvision.train``; returns (model URI, tracking URI)."""
    from rxvision.home import Home
    from rxvision.train.config import load_train_config
    from rxvision.train.run import train

    data = distinct_products(work / "train", args.classes, args.per_class, 160, seed=1)
    # the local MLflow store under the bench's home (runs and artifacts stay in --work)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cfg = load_train_config(
        REPO / "configs" / "cpu-quick.yaml",
        [
            "model.architecture=resnet18",
            f"data.img_size={args.img_size}",
            f"training.epochs={args.epochs}",
            "training.batch_size=32",
            "training.scheduler.T_0=100",
            "data.num_workers=0",
            "trainer.precision=32-true",
            "tracking.mlflow.tracking_uri=null",
            f"checkpoint.root={work / 'checkpoints'}",
            "checkpoint.every_n_steps=1000",
        ],
    )
    os.environ["RXVISION_HOME"] = str(work / "home")
    began = time.perf_counter()
    result = train(cfg, data, home=Home(work / "home").ensure(), progress_bar=False)
    log.info(
        "trained in %.0f s: val top-1 %.3f", time.perf_counter() - began, result.metrics["val_top1"]
    )
    assert result.model_uri is not None and result.tracking_uri is not None
    return result.model_uri, result.tracking_uri


RUNTIMES = (
    "eager fp32",
    "TorchScript",
    "ONNX Runtime fp32",
    "eager dynamic int8 (Linear)",
    "ONNX Runtime static int8 (QDQ)",
)


def images_per_second(predictor: Predictor, images: torch.Tensor, batch: int) -> float:
    """One timed pass over ``images`` in batches of ``batch``."""
    usable = len(images) - len(images) % batch
    began = time.perf_counter()
    for start in range(0, usable, batch):
        predictor.predict(images[start : start + batch])
    return usable / (time.perf_counter() - began)


def build(name: str, exports: Path, threads: int) -> Predictor:
    """One runtime from the prepared files."""
    cpu = torch.device("cpu")
    if name == "TorchScript":
        return TorchScriptPredictor(exports / "model.torchscript.pt", cpu)
    if name == "ONNX Runtime fp32":
        return OnnxPredictor(exports / "model.onnx", cpu, threads=threads)
    if name == "ONNX Runtime static int8 (QDQ)":
        return OnnxPredictor(exports / "model.int8.onnx", cpu, "onnxruntime-int8", threads)
    # the bench's own file, written by prepare(): a pickled module is fine to load here
    model = torch.load(exports / "model.pt", weights_only=False)
    if name == "eager dynamic int8 (Linear)":
        model, _ = dynamic_quantize(model)
    return EagerPredictor(model, cpu)


def worker(name: str, exports: Path, threads: int, passes: int) -> dict[str, float]:
    """Measure one runtime alone in this process (no other runtime's thread pools or
    allocator state around): top-1 on every hold-out image, and the median images/s of
    ``passes`` passes over the first 96 (a multiple of every batch size)."""
    torch.set_num_threads(threads)
    data = torch.load(exports / "holdout.pt", weights_only=True)
    images, labels = data["images"], data["labels"].numpy()
    predictor = build(name, exports, threads)
    out = {"top1": top1_accuracy(predictor, images, labels)}
    timed = images[:96]
    for batch in BATCH_SIZES:
        predictor.predict(timed[:batch])  # warm-up: allocation, kernel choice
        speeds = [images_per_second(predictor, timed, batch) for _ in range(passes)]
        out[f"bs{batch}"] = float(np.median(speeds))
    return out


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or load) the model, export every runtime's file, save the hold-out tensors."""
    if args.model:
        model_uri, tracking = args.model, args.tracking_uri
    else:
        model_uri, tracking = train_model(args.work, args)
    loaded = load_model(model_uri, tracking_uri=tracking, cache_dir=args.work / "cache")
    holdout = args.holdout or distinct_products(
        args.work / "holdout", len(loaded.classes), 20, 160, seed=99
    )
    images, labels = load_image_folder(holdout, loaded)
    # calibrate static int8 on training images when there are some: no hold-out leakage
    calibration_dir = args.work / "train" if (args.work / "train").is_dir() else holdout
    calibration, _ = load_image_folder(calibration_dir, loaded, limit=64)
    exports = args.work / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    torch.save({"images": images, "labels": torch.from_numpy(labels)}, exports / "holdout.pt")
    torch.save(loaded.model, exports / "model.pt")
    export_torchscript(loaded.model, exports / "model.torchscript.pt")
    onnx_path = export_onnx(loaded.model, exports / "model.onnx", img_size=loaded.img_size)
    static_quantize_onnx(
        onnx_path,
        [calibration[i : i + 16].numpy() for i in range(0, len(calibration), 16)],
        exports / "model.int8.onnx",
    )
    _, report = dynamic_quantize(loaded.model)
    return {
        "model_uri": model_uri,
        "img_size": loaded.img_size,
        "classes": len(loaded.classes),
        "holdout_images": len(images),
        "timed_images": min(96, len(images)),
        "dynamic_quantization": report.describe(),
    }


def run_worker(name: str, args: argparse.Namespace) -> dict[str, float]:
    """``worker`` in a fresh interpreter; its JSON is the last line of its output."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--work",
        str(args.work),
        "--threads",
        str(args.threads),
        "--passes",
        str(args.passes),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Prepare once; then rounds of one process per runtime; median per cell; JSON, table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="A logged model URI (default: train one).")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI of --model.")
    parser.add_argument("--holdout", type=Path, help="Hold-out images DIR/<class>/*.")
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench-scoring")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scoring.json")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3, help="Processes per runtime.")
    parser.add_argument("--passes", type=int, default=3, help="Timed passes per process.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=RUNTIMES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.stdout.write(
            json.dumps(worker(args.worker, args.work / "exports", args.threads, args.passes)) + "\n"
        )
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    payload = prepare(args)
    # rounds interleave the runtimes: load from other processes on a shared machine falls
    # on all of them alike rather than on whichever ran at the time
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in RUNTIMES}
    for round_ in range(args.rounds):
        for name in RUNTIMES:
            samples[name].append(run_worker(name, args))
            log.info("round %d %s: %s", round_ + 1, name, samples[name][-1])
    results = []
    for name in RUNTIMES:
        row: dict[str, Any] = {"runtime": name}
        for key in ("top1", *(f"bs{b}" for b in BATCH_SIZES)):
            row[key] = float(np.median([s[key] for s in samples[name]]))
        results.append(row)
    reference = results[0]["top1"]
    payload.update(
        {
            "threads": args.threads,
            "rounds": args.rounds,
            "passes": args.passes,
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "static_int8_kept": (reference - results[-1]["top1"]) * 100 <= 1.0,
            "results": results,
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print_table(payload)


def print_table(payload: dict[str, Any]) -> None:
    """The markdown table of the results."""
    header = "| runtime | bs 1 img/s | bs 8 img/s | bs 32 img/s | top-1 |"
    lines = [header, "|---|---:|---:|---:|---:|"]
    for row in payload["results"]:
        lines.append(
            f"| {row['runtime']} | {row['bs1']:.1f} | {row['bs8']:.1f} | {row['bs32']:.1f} "
            f"| {row['top1']:.3f} |"
        )
    lines.append(
        f"\nResNet-18 at {payload['img_size']} px, {payload['classes']} classes, "
        f"{payload['holdout_images']} hold-out images (timing on {payload['timed_images']}), "
        f"{payload['threads']} threads; median of {payload['rounds']} processes per runtime, "
        f"each the median of {payload['passes']} passes. "
        f"{payload['dynamic_quantization']}. Static int8 kept: {payload['static_int8_kept']}."
    )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
