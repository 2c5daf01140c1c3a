"""Hardware choices of a run: precision, accelerator, world size, rank 0."""

from __future__ import annotations

import pytest

from rxvision.train.config import TrainerConfig
from rxvision.train.hardware import (
    choose_precision,
    launch_rank_is_zero,
    resolve_accelerator,
    world_size,
)

pytestmark = pytest.mark.unit

AVX2 = {"fpu", "sse4_2", "avx", "avx2", "fma"}


@pytest.mark.parametrize(
    ("requested", "accelerator", "cuda_bf16", "flags", "expected"),
    [
        ("auto", "cpu", False, AVX2, "32-true"),  # emulated bf16 is ~5x slower than fp32
        ("auto", "cpu", False, AVX2 | {"avx512f", "avx512_bf16"}, "bf16-mixed"),
        ("auto", "cpu", False, AVX2 | {"amx_bf16", "amx_tile"}, "bf16-mixed"),
        ("auto", "cpu", False, set(), "32-true"),
        ("auto", "gpu", True, AVX2, "bf16-mixed"),
        ("auto", "gpu", False, AVX2, "16-mixed"),
        ("32-true", "gpu", True, AVX2, "32-true"),
        ("bf16-mixed", "cpu", False, AVX2, "bf16-mixed"),  # asked for: honoured
    ],
)
def test_choose_precision(
    requested: str, accelerator: str, cuda_bf16: bool, flags: set[str], expected: str
) -> None:
    assert choose_precision(requested, accelerator, cuda_bf16=cuda_bf16, flags=flags) == expected


def test_cpu_accelerator_and_world_size() -> None:
    assert resolve_accelerator("cpu") == "cpu"
    assert world_size(TrainerConfig(devices=2, num_nodes=3), "cpu") == 6
    assert world_size(TrainerConfig(), "cpu") == 1


@pytest.mark.parametrize(
    ("env", "zero"),
    [
        ({}, True),
        ({"LOCAL_RANK": "1"}, False),
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),
        ({"RANK": "3"}, False),
    ],
)
def test_launch_rank(env: dict[str, str], zero: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launch_rank_is_zero() is zero
