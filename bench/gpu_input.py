"""Is the input pipeline the bottleneck? ResNet-50 training images/s (bf16 autocast,
channels_last) fed by the project's DataLoader (feature-store shards + albumentations,
worker processes, pinned memory, uint8 batches normalized on the device) vs synthetic
tensors already on the device; then scoring images/s (eager, autocast) at batch 64.

    .venv/bin/python bench/gpu_input.py                       # on a GPU
    .venv/bin/python bench/gpu_input.py --device cpu --arch resnet18 --img 64 --steps 6 --batch 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import harness
import torch
from data_loading import build_shards
from torch import nn
from torch.utils.data import DataLoader

from rxvision.data.presets import normalize_batch
from rxvision.data.synth import generate_dataset
from rxvision.train.backbones import build_backbone

SKIP = 5


def model_and_optimizer(
    arch: str, classes: int, device: torch.device
) -> tuple[nn.Module, torch.optim.Optimizer]:
    backbone = build_backbone(arch)
    model = nn.Sequential(backbone.net, nn.Linear(backbone.num_features, classes)).to(device)
    model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def train_rate(
    model: nn.Module, opt: torch.optim.Optimizer, batches: object, steps: int, device: torch.device
) -> tuple[float, float]:
    """(images, seconds) over ``steps`` steps after ``SKIP`` warm-up steps."""
    loss_fn = nn.CrossEntropyLoss()
    images_done, began = 0, 0.0
    for step, (images, labels) in enumerate(batches):  # type: ignore[call-overload]
        if step == SKIP:
            if device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
        images = images.to(device, non_blocking=True)
        if images.dtype == torch.uint8:  # the project's loader: normalized on the device
            images = normalize_batch(images)
        images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= SKIP:
            images_done += images.shape[0]
        if step + 1 == steps + SKIP:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return float(images_done), time.perf_counter() - began


def synthetic(batch: int, img: int, classes: int, device: torch.device):  # type: ignore[no-untyped-def]
    images = torch.randn(batch, 3, img, img, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    while True:
        yield images, labels


def loader_batches(loader: DataLoader):  # type: ignore[no-untyped-def,type-arg]
    while True:
        yield from loader


@torch.inference_mode()
def score_rate(
    model: nn.Module, batch: int, img: int, device: torch.device, passes: int
) -> tuple[float, float]:
    model.eval()
    images = torch.randn(batch, 3, img, img, device=device).contiguous(
        memory_format=torch.channels_last
    )
    for _ in range(3):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(passes):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    model.train()
    return float(batch * passes), time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON (default: bench/results/)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    classes = 10
    with tempfile.TemporaryDirectory(prefix="rxv-bench-gpu-") as tmp:
        data = Path(tmp) / "pills"
        generate_dataset(
            data,
            classes=classes,
            per_class=args.images // classes,
            size=args.img + 32,
            seed=0,
            lookalikes=False,
        )
        (Path(tmp) / "shards").mkdir()
        dataset = build_shards(data, Path(tmp) / "shards", args.img)
        loader = DataLoader(
            dataset,
            batch_size=args.batch,
            shuffle=True,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=args.workers > 0,
            prefetch_factor=4 if args.workers > 0 else None,
            drop_last=True,
        )
        model, opt = model_and_optimizer(args.arch, classes, device)
        fed = loader_batches(loader)
        cases = [
            harness.Case(
                "synthetic tensors on the device",
                lambda: train_rate(
                    model, opt, synthetic(args.batch, args.img, classes, device), args.steps, device
                ),
            ),
            harness.Case(
                "project DataLoader (shards)",
                lambda: train_rate(model, opt, fed, args.steps, device),
            ),
            harness.Case(
                "scoring, eager autocast, batch 64",
                lambda: score_rate(model, 64, args.img, device, args.steps),
            ),
        ]
        harness.measure(cases, repeats=args.repeats, warmup=0)
        rows = harness.summarize(cases, baseline=cases[0].name)
        harness.report(
            "gpu_input",
            rows,
            unit="images/s",
            baseline=cases[0].name,
            params={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            out=args.out,
        )
        if rows[1].ratio is not None:
            verdict = (
                "the input pipeline is the bottleneck"
                if rows[1].ratio < 0.9
                else "the GPU is the bottleneck"
            )
            print(f"DataLoader / synthetic = {rows[1].ratio:.2f}: {verdict}")


if __name__ == "__main__":
    main()
