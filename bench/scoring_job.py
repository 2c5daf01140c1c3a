"""The batch scoring job end to end, S3 -> Parquet: ``rxvision score`` (streamed
downloads, batches, the fastest runtime, Parquet shards committed atomically) vs the
naive loop (download one image, predict it alone, write one row as its own object).

A small ResNet-18 is trained first (one epoch on synthetic pills: throughput does not
depend on accuracy) into the stack's MLflow; then both score the same images from S3.

    .venv/bin/python bench/scoring_job.py [--images 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import tempfile
import uuid
from pathlib import Path

import harness
import numpy as np
import torch
from PIL import Image
from stack import bench_stack

from rxvision.data.synth import generate_dataset
from rxvision.home import Home
from rxvision.serving.model_loading import load_model
from rxvision.serving.scoring_config import load_scoring_config
from rxvision.serving.scoring_run import score_batch
from rxvision.storage.s3 import S3Store

INPUT = "s3://rxvision-data/bench/scoring-input"


def train_small_model(work: Path) -> str:
    from rxvision.home import repo_root
    from rxvision.train.config import load_train_config
    from rxvision.train.run import train

    data = work / "train"
    generate_dataset(data, classes=6, per_class=20, size=128, seed=1, lookalikes=False)
    (data / "manifest.parquet").unlink(missing_ok=True)
    cfg = load_train_config(
        repo_root() / "configs" / "cpu-quick.yaml",
        ["training.epochs=1", "data.img_size=112", "checkpoint.root=" + str(work / "ckpt")],
    )
    result = train(cfg, data, home=Home(work / "home").ensure(), progress_bar=False)
    assert result.model_uri, "training logged no model"
    return result.model_uri


def upload_inputs(work: Path, images: int) -> list[str]:
    data = work / "incoming"
    generate_dataset(data, classes=6, per_class=images // 6, size=240, seed=9, lookalikes=False)
    store = S3Store()
    keys = []
    for path in sorted(data.rglob("*.jpg")):
        uri = f"{INPUT}/{path.relative_to(data).as_posix()}"
        store.upload_file(path, uri)
        keys.append(uri)
    return keys


def naive(model_uri: str, keys: list[str]) -> float:
    """One image at a time, one object per row."""
    store = S3Store()
    loaded = load_model(model_uri)
    preset = loaded.preset()
    model = loaded.model.eval()
    out = f"s3://rxvision-predictions/bench/naive-{uuid.uuid4().hex[:8]}"
    with torch.inference_mode():
        for key in keys:
            image = np.asarray(Image.open(io.BytesIO(store.get_bytes(key))).convert("RGB"))
            logits = model(preset(image).unsqueeze(0))["logits"]
            probs = torch.softmax(logits, dim=1)[0]
            row = {
                "key": key,
                "label": loaded.classes[int(probs.argmax())],
                "confidence": float(probs.max()),
            }
            store.put_bytes(f"{out}/{Path(key).name}.json", json.dumps(row).encode())
    return float(len(keys))


def project(model_uri: str, images: int) -> float:
    out = f"s3://rxvision-predictions/bench/job-{uuid.uuid4().hex[:8]}"
    config = load_scoring_config(overrides=["statsd.host=null"])
    manifest = score_batch(model_uri, INPUT, out, config=config)
    assert manifest["rows"] == images, manifest["rows"]
    return float(manifest["rows"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    with bench_stack() as _, tempfile.TemporaryDirectory(prefix="rxv-bench-job-") as tmp:
        work = Path(tmp)
        model_uri = train_small_model(work)
        keys = upload_inputs(work, args.images)
        cases = [
            harness.Case("naive loop (1 image, 1 row)", lambda: naive(model_uri, keys)),
            harness.Case("rxvision score (S3 -> Parquet)", lambda: project(model_uri, len(keys))),
        ]
        harness.measure(cases, repeats=args.repeats, warmup=1)
        rows = harness.summarize(cases, baseline=cases[0].name)
        harness.report(
            "scoring_job",
            rows,
            unit="images/s",
            baseline=cases[0].name,
            params={**vars(args), "images": len(keys), "model": "resnet18 @ 112 px"},
        )


if __name__ == "__main__":
    main()
