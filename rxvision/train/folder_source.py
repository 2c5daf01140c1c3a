"""Training on a folder of images (``DIR/<class>/<image>``): checked first, then read.

The nightly trains on snapshots its ``validate`` task has passed; a folder named with
``rxvision train --data DIR`` has had no such check. ``check_image_folder`` runs the same
``DataValidator`` with the nightly's policy (configs/data.yaml ``validation``) before any
MLflow run or training starts: a folder that fails is refused with the report's path and
the bad files named, or, when asked (``skip_invalid``), its bad files are left out under
the nightly's quarantine rule (at most ``max_quarantine_fraction`` of the files).
``folder_rows``, ``folder_key`` and ``ImageFolderDataset`` read the images that remain.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from rxvision.data.feature_store import MANIFEST, list_image_folder
from rxvision.data.imaging import (
    ImageDecodeError,
    ImageSpec,
    decode_hashed,
    load_image,
    sha256_hex,
)
from rxvision.data.splits import ImageKey
from rxvision.data.validation import DataValidator, FileIssue, ValidationPolicy
from rxvision.data.validation.criteria import FILE_CRITERIA
from rxvision.errors import DataValidationError

log = logging.getLogger(__name__)

# where the left-out files are recorded in the MLflow run, and the count's param/tag
SKIPPED_ARTIFACT = "data/skipped_files.json"
SKIPPED_KEY = "data.skipped_files"
MAX_NAMED = 5  # bad files named in the one-line error; the report lists them all


def image_folder_of(data: str | Path) -> Path | None:
    """The folder when ``--data`` names an image folder (not a shard set, not S3)."""
    text = str(data)
    if text.startswith("s3://"):
        return None
    path = Path(text).expanduser()
    if path.is_dir() and not (path / MANIFEST).is_file():
        return path
    return None


@dataclass(frozen=True)
class FolderCheck:
    """A folder that passed validation: the report and the files left out (if any)."""

    folder: Path
    report: Path
    skipped: tuple[FileIssue, ...]

    @property
    def skipped_paths(self) -> list[str]:
        """The left-out files, relative to the folder."""
        return [str(issue.path) for issue in self.skipped if issue.path]

    def record(self) -> dict[str, Any]:
        """What the MLflow run keeps about the left-out files."""
        return {
            "folder": str(self.folder),
            "report": str(self.report),
            "count": len(self.skipped),
            "files": [issue.to_dict() for issue in self.skipped],
        }


def check_image_folder(
    folder: Path,
    report: Path,
    policy: ValidationPolicy,
    *,
    skip_invalid: bool = False,
    workers: int | None = None,
) -> FolderCheck:
    """Validate ``folder`` under ``policy``, write the JSON report to ``report``, and
    refuse it (``DataValidationError``) when a blocking criterion fails.

    With ``skip_invalid`` the policy's quarantine mode applies: files that fail a file
    criterion are left out (and returned) unless there are more than the policy allows.
    """
    if skip_invalid:
        policy = policy.model_copy(update={"quarantine": True})
    result = DataValidator(policy, workers=workers).validate_dataset(folder)
    result.write_report(report)
    if result.ok:
        skipped = result.quarantined
        if skipped:
            log.warning(
                "leaving %d invalid files of %s out of training (report %s)",
                len(skipped),
                folder,
                report,
            )
        return FolderCheck(folder, report, tuple(skipped))
    bad = result.rejected or result.quarantined
    failed = ", ".join(_criterion_text(c.name, c.value, c.threshold) for c in result.failed)
    named = ", ".join(f"{issue.path} ({issue.code})" for issue in bad[:MAX_NAMED])
    more = f" and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
    files = f"; {len(bad)} bad files: {named}{more}" if bad else ""
    hint = "" if skip_invalid else "; --skip-invalid trains on the rest"
    raise DataValidationError(
        f"image folder {folder} failed validation ({failed}){files}; report: {report}{hint}"
    )


def _criterion_text(name: str, value: Any, threshold: Any) -> str:
    if name in FILE_CRITERIA:
        return f"{name}: {value} files"
    return f"{name}: {value}, limit {threshold}"


def folder_rows(root: Path, exclude: Collection[str] = ()) -> list[tuple[str, str]]:
    """(relative path, label) of every image of ``root`` but those in ``exclude``."""
    left_out = set(exclude)
    return [row for row in list_image_folder(root) if row[0] not in left_out]


def write_skipped(check: FolderCheck, path: Path) -> Path:
    """The record of the left-out files as a JSON file (for an MLflow artifact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(check.record(), indent=2))
    return path


def folder_key(path: Path, spec: ImageSpec, label: int) -> ImageKey:
    """The content key (sha256, perceptual hash) of one image file, for the split."""
    try:
        data = path.read_bytes()
        _, _, frame_hash = decode_hashed(data, spec, name=str(path))
    except ImageDecodeError as exc:
        raise DataValidationError(
            f"{path}: {exc.reason} (run `rxvision data validate` and leave rejected files out)"
        ) from exc
    return ImageKey(sha256_hex(data), frame_hash, label)


class ImageFolderDataset(Dataset[tuple[Any, int]]):
    """Images decoded by ``load_image`` (as scoring decodes them), then transformed."""

    def __init__(
        self,
        root: Path,
        rows: Sequence[tuple[str, int]],
        transform: Callable[[np.ndarray], Any],
        spec: ImageSpec,
    ) -> None:
        self.root = root
        self.rows = list(rows)
        self.transform = transform
        self.spec = spec

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.rows[index]
        array = load_image(self.root / path, self.spec)
        return self.transform(array), label
