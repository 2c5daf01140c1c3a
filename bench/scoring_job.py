"""The batch scoring job end to end, S3 -> Parquet: ``rxvision score`` (streamed
downloads, decoding in isolated worker processes overlapped with inference, batches, the
fastest runtime, Parquet shards committed atomically) vs the naive loop (download one
image, decode it under the model's contract, predict it alone, write one row as its own
object), and vs the chosen runtime alone on the same images already decoded in memory
(the job's ceiling: what is left when fetching and decoding cost nothing).

Last, one more run of the job (gallery off) and of the runtime alone are timed with their
CPU split by where it went (this process: downloads, batching, the model's threads, rows;
the decode workers; the local S3 server), which bounds the job on this machine: at every
core busy it would reach cores / (its CPU per image).

The job is also timed with its review gallery off: the benchmark's one-epoch model sends
every row to review, so every row gets a thumbnail and a place on the gallery's pages (a
trained model sends a few). The default 1,200 images amortize what each run does once
(load the model, build the runtime and check its parity with the eager model: ~1.3 s
here), as a nightly batch of 10,000 and more does.

A small ResNet-18 is trained first (one epoch on synthetic pills: throughput does not
depend on accuracy) into the stack's MLflow, with the CPU recipe's preprocessing (the pill
crop), then registered and exported as the nightly does (its static INT8 model judged
against fp32 on held-out photos: the job scores with it when it is kept, as a champion
would); then all three score the same images from S3.

    .venv/bin/python bench/scoring_job.py [--images 1200] [--repeats 3] [--runtimes ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import harness
import psutil
import torch
from stack import bench_stack

from rxvision.data.imaging import load_image
from rxvision.data.synth import generate_dataset
from rxvision.home import Home
from rxvision.serving.model_loading import load_model
from rxvision.serving.model_pool import ModelPool
from rxvision.serving.predictions import PRIMARY
from rxvision.serving.predictors import Predictor
from rxvision.serving.scoring_config import load_scoring_config
from rxvision.serving.scoring_run import score_batch
from rxvision.storage.s3 import S3Store

INPUT = "s3://rxvision-data/bench/scoring-input"
GALLERY_ENV = "RXVISION_REVIEW_GALLERY"
# config overrides of the runtimes tried (--runtimes; none: the serving config's)
RUNTIMES: list[str] = []
SETTLE_S = 1.0


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


def registered_and_exported(model_uri: str, work: Path) -> str:
    """The model registered and exported as the nightly's ``register`` does: TorchScript
    and ONNX checked, static INT8 calibrated on the training photos and judged on
    held-out ones (kept only when it holds against fp32), batch sizes tuned. The job
    then scores with what a champion would."""
    import mlflow

    from rxvision.serving.version_export import export_version

    held_out = work / "held-out"
    generate_dataset(held_out, classes=6, per_class=10, size=128, seed=2, lookalikes=False)
    (held_out / "manifest.parquet").unlink(missing_ok=True)
    version = mlflow.register_model(model_uri, "bench-scoring-job").version
    uri = f"models:/bench-scoring-job/{version}"
    summary = export_version(uri, image_folder=held_out, calibration_folder=work / "train")
    if summary.int8 is not None:
        print(summary.int8.describe())
    return uri


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
            image = load_image(store.get_bytes(key), loaded.spec, name=key)
            logits = model(preset(image).unsqueeze(0))["logits"]
            probs = torch.softmax(logits, dim=1)[0]
            row = {
                "key": key,
                "label": loaded.classes[int(probs.argmax())],
                "confidence": float(probs.max()),
            }
            store.put_bytes(f"{out}/{Path(key).name}.json", json.dumps(row).encode())
    return float(len(keys))


def decoded_inputs(model_uri: str, keys: list[str]) -> torch.Tensor:
    """Every image decoded and preprocessed as scoring does, stacked in memory."""
    store = S3Store()
    loaded = load_model(model_uri)
    return torch.stack([loaded.load(store.get_bytes(key), name=key) for key in keys])


def chosen_runtime(model_uri: str, sample: torch.Tensor) -> tuple[Predictor, int]:
    """The runtime and batch size the job picks for this model (built once, untimed)."""
    pool = ModelPool(
        model_uri, None, load_scoring_config(overrides=["statsd.host=null", *RUNTIMES])
    )
    predictor = pool.predictor(PRIMARY, sample)
    return predictor, pool.batch_size()


def runtime_only(predictor: Predictor, size: int, inputs: torch.Tensor) -> float:
    """Inference alone, in the job's batches, on tensors already in memory."""
    for start in range(0, len(inputs), size):
        predictor.predict(inputs[start : start + size])
    return float(len(inputs))


def project(model_uri: str, images: int, gallery: bool = True) -> float:
    out = f"s3://rxvision-predictions/bench/job-{uuid.uuid4().hex[:8]}"
    saved = os.environ.get(GALLERY_ENV)
    os.environ[GALLERY_ENV] = str(gallery).lower()
    try:
        return _score_once(model_uri, images, out)
    finally:
        if saved is None:
            del os.environ[GALLERY_ENV]
        else:
            os.environ[GALLERY_ENV] = saved


def _score_once(model_uri: str, images: int, out: str) -> float:
    # no inference cache: every repetition scores the same images with the same model,
    # and from the second on the cache would answer (bench/scoring_cache.py measures it)
    config = load_scoring_config(overrides=["statsd.host=null", "cache.uri=null", *RUNTIMES])
    manifest = score_batch(model_uri, INPUT, out, config=config)
    assert manifest["rows"] == images, manifest["rows"]
    return float(manifest["rows"])


def _cpu_s(process: psutil.Process, reaped_children: bool = False) -> float:
    """CPU seconds of ``process`` (and of its children it has reaped), 0 once gone."""
    try:
        t = process.cpu_times()
    except psutil.Error:
        return 0.0
    own = t.user + t.system
    return own + (t.children_user + t.children_system if reaped_children else 0.0)


def _pool_processes(me: psutil.Process) -> list[psutil.Process]:
    """This process's multiprocessing helpers: the forkserver (whose reaped children are
    the decode workers) and the resource tracker. Not a stack ``bench_stack`` started
    here: its servers are this process's children too."""
    found = []
    for child in me.children():
        try:
            if "from multiprocessing" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _machine_busy_s() -> float:
    """CPU seconds every process of the machine has used so far (all but idle time)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _cpu_by_place() -> dict[str, float]:
    """CPU seconds so far: this process; the decode workers (reaped by the forkserver; and
    any child this process reaped); the S3 server (SeaweedFS, ``weed``); the machine."""
    me = psutil.Process()
    servers = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "weed"]
    helpers = sum(_cpu_s(c, reaped_children=True) for c in _pool_processes(me))
    mine = me.cpu_times()
    return {
        "this_process": mine.user + mine.system,
        "decode_workers": helpers + mine.children_user + mine.children_system,
        "s3_server": sum(_cpu_s(p) for p in servers),
        "machine": _machine_busy_s(),
    }


def cpu_per_image(run: Callable[[], float]) -> dict[str, float]:
    """One more ``run``: its CPU per image in ms by place (``total``: the job's own
    processes; ``other``: the rest of the machine meanwhile), and its images/s."""
    before, began = _cpu_by_place(), time.perf_counter()
    images = run()
    seconds, machine = time.perf_counter() - began, _machine_busy_s()
    time.sleep(SETTLE_S)  # the forkserver reaps the stopped workers: their CPU counts then
    after = {**_cpu_by_place(), "machine": machine}
    per_image = {k: (after[k] - before[k]) / images * 1000 for k in before}
    places = ("this_process", "decode_workers", "s3_server")
    split = {k: round(per_image[k], 3) for k in places}
    total = sum(split.values())
    other = max(0.0, per_image["machine"] - total)  # the rest of the machine meanwhile
    return {
        **split,
        "total": round(total, 3),
        "other": round(other, 3),
        "images_per_s": images / seconds,
    }


def cpu_bound(job: dict[str, float], alone: dict[str, float]) -> dict[str, float]:
    """What the CPU split says: the job's images/s with every core busy, as a share of
    the runtime alone, and the share of the cores the job kept busy."""
    cores = len(os.sched_getaffinity(0))
    ceiling = cores * 1000 / job["total"]
    return {
        "cores": cores,
        "ceiling_images_per_s": round(ceiling, 1),
        "ceiling_pct_of_runtime_alone": round(100 * ceiling / alone["images_per_s"], 1),
        "job_pct_of_runtime_alone": round(100 * job["images_per_s"] / alone["images_per_s"], 1),
        "cores_busy_pct": round(100 * job["images_per_s"] / ceiling, 1),
        "machine_busy_pct": round(
            100 * (job["total"] + job.get("other", 0.0)) * job["images_per_s"] / (1000 * cores), 1
        ),
    }


def print_cpu_split(
    job: dict[str, float], alone: dict[str, float], bound: dict[str, float]
) -> None:
    print("\nCPU per image (ms), one more run of each:")
    print(
        f"  job, gallery off: {job['total']:.2f} = this process {job['this_process']:.2f}"
        f" + decode workers {job['decode_workers']:.2f} + S3 server {job['s3_server']:.2f}"
        f" ({job['images_per_s']:.1f} images/s); other processes {job['other']:.2f}"
    )
    print(f"  runtime alone:    {alone['this_process']:.2f} ({alone['images_per_s']:.1f} images/s)")
    print(
        f"  every one of {bound['cores']} cores busy, the job would reach"
        f" {bound['ceiling_images_per_s']:.1f} images/s ="
        f" {bound['ceiling_pct_of_runtime_alone']:.1f}% of the runtime alone; it ran at"
        f" {bound['job_pct_of_runtime_alone']:.1f}%, the cores {bound['cores_busy_pct']:.0f}% busy"
        f" with its work ({bound['machine_busy_pct']:.0f}% with every process's)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--runtimes",
        nargs="+",
        help="The runtimes to try, in order (default: configs/serving.yaml's), e.g. "
        "`--runtimes onnxruntime` for fp32 where the version has an INT8 model.",
    )
    args = parser.parse_args()
    if args.runtimes:
        RUNTIMES.append(f"runtimes=[{','.join(args.runtimes)}]")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    with bench_stack() as _, tempfile.TemporaryDirectory(prefix="rxv-bench-job-") as tmp:
        work = Path(tmp)
        model_uri = registered_and_exported(train_small_model(work), work)
        keys = upload_inputs(work, args.images)
        inputs = decoded_inputs(model_uri, keys)
        predictor, size = chosen_runtime(model_uri, inputs[:8])
        cases = [
            harness.Case("naive loop (1 image, 1 row)", lambda: naive(model_uri, keys)),
            harness.Case("rxvision score (S3 -> Parquet)", lambda: project(model_uri, len(keys))),
            harness.Case(
                "rxvision score, review gallery off",
                lambda: project(model_uri, len(keys), gallery=False),
            ),
            harness.Case(
                f"{predictor.runtime} alone, images decoded in memory",
                lambda: runtime_only(predictor, size, inputs),
            ),
        ]
        harness.measure(cases, repeats=args.repeats, warmup=1)
        job = cpu_per_image(lambda: project(model_uri, len(keys), gallery=False))
        alone = cpu_per_image(lambda: runtime_only(predictor, size, inputs))
        bound = cpu_bound(job, alone)
        rows = harness.summarize(cases, baseline=cases[0].name)
        harness.report(
            "scoring_job",
            rows,
            unit="images/s",
            baseline=cases[0].name,
            params={**vars(args), "images": len(keys), "model": "resnet18 @ 112 px"},
            extra={"cpu_ms_per_image": {"job": job, "runtime_alone": alone}, "cpu_bound": bound},
        )
        print_cpu_split(job, alone, bound)


if __name__ == "__main__":
    main()
