"""What a training run runs on: the accelerator, the precision it can afford, how many
processes, and whether this process is rank 0 (read from the launchers' variables)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rxvision.errors import ConfigError
from rxvision.train.config import TrainerConfig


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_accelerator(requested: str) -> str:
    """``cpu`` or ``gpu``; ``auto`` is ``gpu`` when CUDA is available."""
    if requested in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={requested} but CUDA is not available")
        return "gpu"
    if requested == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def choose_precision(
    requested: str, accelerator: str, *, cuda_bf16: bool = False, flags: set[str] | None = None
) -> str:
    """The Lightning precision for ``requested`` on ``accelerator``.

    ``auto``: bf16-mixed on GPUs with bf16, else 16-mixed; on CPUs bf16-mixed only with
    native bf16 instructions (``avx512_bf16`` or ``amx_bf16``), else 32-true (emulated
    bf16 is several times slower than fp32 on AVX2-only CPUs).
    """
    if requested != "auto":
        return requested
    if accelerator == "gpu":
        return "bf16-mixed" if cuda_bf16 else "16-mixed"
    native = {"avx512_bf16", "amx_bf16"} & (flags if flags is not None else cpu_flags())
    return "bf16-mixed" if native else "32-true"


def world_size(trainer: TrainerConfig, accelerator: str) -> int:
    """Processes in the run: devices per node times nodes."""
    if trainer.devices == "auto":
        devices = torch.cuda.device_count() if accelerator == "gpu" else 1
    else:
        devices = trainer.devices
    return max(1, devices) * trainer.num_nodes


def launch_rank_is_zero() -> bool:
    """Whether this process is global rank 0, from the variables launchers set."""
    env = os.environ
    if env.get("RANK"):
        return int(env["RANK"]) == 0
    node = int(env.get("NODE_RANK") or env.get("GROUP_RANK") or 0)
    return node == 0 and int(env.get("LOCAL_RANK") or 0) == 0
