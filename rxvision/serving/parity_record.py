"""A runtime file's parity check with eager, recorded beside the file on this host.

Every scoring task of a run builds the same runtime from the same immutable file of a
version (``$RXVISION_HOME/cache/serving``). The first task checks it against the eager
network on real images and records the check; the next ones trust the record and never
unpickle the eager network, whose load is most of a task's start after its imports
(torchvision's models import ``torch._dynamo``: ~1 s, ~4 s with 4 tasks starting at once
on 2 cores). The record holds only for the same file, device and library versions: a
replaced file or an upgraded torch or ONNX Runtime checks again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rxvision.serving.exports import ParityReport

log = logging.getLogger(__name__)

SUFFIX = ".parity.json"


def parity_record_path(runtime_file: Path) -> Path:
    """Where the check of ``runtime_file`` is recorded (beside it)."""
    return runtime_file.with_name(runtime_file.name + SUFFIX)


def _conditions(runtime_file: Path, device: str) -> dict[str, Any]:
    """What a recorded check holds for: this file as it is now, the device, the libraries."""
    stat = runtime_file.stat()
    return {
        "file_size": stat.st_size,
        "file_mtime_ns": stat.st_mtime_ns,
        "device": device,
        "torch": torch.__version__,
        "onnxruntime": _onnxruntime_version(),
    }


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def passed_parity_before(runtime_file: Path, device: str, tolerance: float) -> bool:
    """Whether this host recorded a passed check of ``runtime_file`` on ``device``, with the
    same libraries, within ``tolerance``. An unreadable record is no record."""
    record = parity_record_path(runtime_file)
    try:
        data = json.loads(record.read_text())
        report = ParityReport(**data["report"])
        same = data["conditions"] == _conditions(runtime_file, device)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if record.exists():
            log.warning("ignoring the parity record %s: %s", record, exc)
        return False
    return same and report.passed and report.max_abs_diff <= tolerance


def record_parity(runtime_file: Path, device: str, report: ParityReport) -> None:
    """Record a passed check beside ``runtime_file`` (atomically: tasks starting together
    may record at once). A failed write only costs later tasks the check."""
    if not report.passed:
        return
    record = parity_record_path(runtime_file)
    data = {"conditions": _conditions(runtime_file, device), "report": asdict(report)}
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=record.parent, prefix=".parity-")
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        os.replace(tmp, record)
        tmp = None
    except OSError as exc:
        log.warning("cannot record the parity check in %s: %s", record, exc)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
