"""``rxvision status`` says how the champion scores on a CPU: its judged INT8 model, or
fp32 and why."""

from __future__ import annotations

import pytest

from rxvision.cli.pipeline import _int8_line, _print_status
from rxvision.serving.exports import TAG
from rxvision.serving.int8_record import int8_judgement
from rxvision.serving.quantize import Int8Decision

pytestmark = pytest.mark.unit


def status_line(tags: dict[str, str]) -> str:
    return _int8_line(int8_judgement(tags))


def test_the_runtime_line_names_int8_or_why_fp32() -> None:
    kept = Int8Decision(True, 0.97, 0.96, 1.0, None, ece_fp32=0.03, ece_int8=0.035)
    assert status_line(kept.tags(TAG)) == (
        "static INT8 (top-1 0.9600 vs fp32 0.9700, ECE 0.0350 vs 0.0300, "
        "wrong without review 0 vs 0)"
    )
    refused = Int8Decision(False, 0.97, 0.90, 1.0, None, refused=("top-1 7.00 points lower",))
    assert status_line(refused.tags(TAG)).startswith(
        "fp32 ONNX Runtime (INT8 refused: top-1 7.00 points lower; top-1 0.9000 vs"
    )
    old = {f"{TAG}.int8.kept": "true"}
    assert "INT8 kept on top-1 alone: export the version again" in status_line(old)
    assert status_line({}) == "fp32 ONNX Runtime (no INT8 model tried at export)"


def test_the_status_table_has_the_champions_cpu_runtime(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tags = Int8Decision(True, 0.97, 0.96, 1.0, None).tags(TAG)
    champion = {"name": "rx", "version": "3", "metrics": {}, "int8": int8_judgement(tags)}
    _print_status({"champion": champion})
    out = " ".join(capsys.readouterr().out.split())
    assert "cpu runtime │ static INT8 (top-1 0.9600" in out
