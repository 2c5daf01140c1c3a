"""Training step: samples/s of the project's Lightning trainer vs a plain PyTorch loop
with the same model, data, batch, optimizer and precision: what Lightning (logging,
metrics, callbacks, the loop) costs, in percent.

Both train ``RxVisionTrainer`` (backbone + head, AdamW, cross-entropy with label
smoothing, channels_last) on the same in-memory batches; the plain loop calls the
module's own forward and loss, so only the machinery around them differs.

    .venv/bin/python bench/train_step.py [--arch resnet18] [--img 64] [--steps 30]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import harness
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rxvision.train.backbones import build_backbone
from rxvision.train.module import RxVisionTrainer

CLASSES = [f"class-{i}" for i in range(6)]


def make_module(arch: str) -> RxVisionTrainer:
    torch.manual_seed(0)
    backbone = build_backbone(arch)
    return RxVisionTrainer(
        backbone.net,
        backbone.num_features,
        CLASSES,
        architecture=arch,
        label_smoothing=0.1,
        steps_per_epoch=1000,
        channels_last=True,
    )


# the first steps (allocator warm-up, Lightning's loop set-up) are left out of the timing
SKIP = 5


class StepClock(pl.Callback):
    """The time from the start of step ``SKIP`` to the end of training."""

    def __init__(self) -> None:
        self.began = 0.0
        self.ended = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == SKIP:
            self.began = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, *args: object) -> None:
        self.ended = time.perf_counter()


def lightning_steps(
    loader: DataLoader,
    arch: str,
    steps: int,
    precision: str,  # type: ignore[type-arg]
) -> tuple[float, float]:
    module = make_module(arch)
    clock = StepClock()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        precision=precision,  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(module, train_dataloaders=loader)
    return float((steps - SKIP) * loader.batch_size), clock.ended - clock.began  # type: ignore[operator]


def plain_steps(
    loader: DataLoader,
    arch: str,
    steps: int,
    precision: str,  # type: ignore[type-arg]
) -> tuple[float, float]:
    module = make_module(arch)
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    autocast = precision.startswith("bf16")
    done, began = 0, 0.0
    while done < steps:
        for images, labels in loader:
            if done == SKIP:
                began = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(module(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    return float((steps - SKIP) * loader.batch_size), time.perf_counter() - began  # type: ignore[operator]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--img", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch * 8, 3, args.img, args.img, generator=gen)
    labels = torch.randint(0, len(CLASSES), (args.batch * 8,), generator=gen)
    loader = DataLoader(TensorDataset(images, labels), batch_size=args.batch, shuffle=True)
    cases = [
        harness.Case(
            "plain PyTorch loop",
            lambda: plain_steps(loader, args.arch, args.steps, args.precision),
        ),
        harness.Case(
            "Lightning RxVisionTrainer",
            lambda: lightning_steps(loader, args.arch, args.steps, args.precision),
        ),
    ]
    harness.measure(cases, repeats=args.repeats, warmup=1)
    rows = harness.summarize(cases, baseline=cases[0].name)
    overhead = 100 * (1 / rows[1].ratio - 1) if rows[1].ratio else None
    harness.report(
        "train_step",
        rows,
        unit="samples/s",
        baseline=cases[0].name,
        params=vars(args),
        extra={"lightning_overhead_pct": overhead},
    )
    print(f"Lightning overhead: {overhead:.1f}% of the plain loop's time per sample")


if __name__ == "__main__":
    main()
