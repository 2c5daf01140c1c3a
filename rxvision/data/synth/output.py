"""The synthetic dataset on disk: the output folder (refused unless empty or an earlier
synthetic set), image files written atomically, and ``manifest.parquet`` with one row
per file (path, label, sha256, size, side shown, planted defect).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rxvision.errors import ConfigError

MANIFEST_NAME = "manifest.parquet"
MANIFEST_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("label", pa.string()),
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("side", pa.string()),
        ("defect", pa.string()),
    ]
)


@dataclass(frozen=True)
class Row:
    """One manifest row: a file written and what it shows."""

    path: str
    label: str
    sha256: str
    width: int | None
    height: int | None
    side: str | None
    defect: str | None = None


def prepare_out(out: Path, *, overwrite: bool) -> None:
    """Refuse a non-empty folder unless it holds an earlier synthetic set and overwrite is on."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"--out {out} is not empty; choose an empty folder or overwrite")
        if not (out / MANIFEST_NAME).is_file():
            raise ConfigError(
                f"--out {out} holds no {MANIFEST_NAME}: refusing to overwrite a folder "
                "that synth did not write"
            )
        for child in out.iterdir():
            if child.is_dir() and child.name.startswith("ndc-"):
                shutil.rmtree(child)
        (out / MANIFEST_NAME).unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a hidden temporary file, so an interrupted run leaves no partial image."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_manifest(out: Path, rows: list[Row]) -> Path:
    """Write the manifest, rows sorted by path, atomically; its path."""
    rows = sorted(rows, key=lambda row: row.path)
    table = pa.table(
        {
            "path": [r.path for r in rows],
            "label": [r.label for r in rows],
            "sha256": [r.sha256 for r in rows],
            "width": [r.width for r in rows],
            "height": [r.height for r in rows],
            "side": [r.side for r in rows],
            "defect": [r.defect for r in rows],
        },
        schema=MANIFEST_SCHEMA,
    )
    path = out / MANIFEST_NAME
    tmp = out / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_manifest(out: Path) -> pa.Table:
    """The manifest ``generate_dataset`` wrote into ``out``."""
    return pq.read_table(out / MANIFEST_NAME)
