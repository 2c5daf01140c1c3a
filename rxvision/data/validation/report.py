"""What a validation found, and its JSON report: findings per file (FileIssue), the outcome
of each criterion (CriterionResult), counts and speed (ValidationSummary) and the whole
ValidationResult, which writes the report (schema ``rxvision.data-validation/1``, see
docs/data-validation.md) and raises DataValidationError when a blocking criterion failed.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rxvision.data.validation.criteria import FILE_CRITERIA
from rxvision.data.validation.policy import ValidationPolicy
from rxvision.errors import DataValidationError

REPORT_SCHEMA = "rxvision.data-validation/1"


@dataclass(frozen=True)
class FileIssue:
    """One finding: a rejected, quarantined or warned file (``path`` None: the dataset)."""

    path: str | None
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The report's ``{"path", "code", "message"}`` entry."""
        return {"path": self.path, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class CriterionResult:
    """The outcome of one criterion.

    ``status``: ``passed``, ``failed`` (blocks the run), ``warning`` (failed, configured as
    a warning) or ``quarantined`` (failed files excluded instead of failing the run).
    """

    name: str
    passed: bool
    blocking: bool
    severity: str
    status: str
    value: float | int | None
    threshold: float | int | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "passed": self.passed,
            "blocking": self.blocking,
            "severity": self.severity,
            "status": self.status,
            "value": self.value,
            "threshold": self.threshold,
            "details": self.details,
        }


@dataclass(frozen=True)
class ValidationSummary:
    """Counts and speed of one validation run."""

    files: int
    images_ok: int
    rejected: int
    quarantined: int
    warnings: int
    classes: int
    layout: str
    splits: tuple[str, ...]
    bytes: int
    seconds: float
    images_per_second: float
    workers: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "files": self.files,
            "images_ok": self.images_ok,
            "rejected": self.rejected,
            "quarantined": self.quarantined,
            "warnings": self.warnings,
            "classes": self.classes,
            "layout": self.layout,
            "splits": list(self.splits),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "workers": self.workers,
        }


@dataclass(frozen=True)
class ValidationResult:
    """Everything one validation found; ``ok`` is False when a blocking criterion failed.
    ``data_path``: the folder validated, or what a snapshot read in place is called
    (``snapshot v3``: its shards were fetched into a temporary folder)."""

    data_path: Path | str
    ok: bool
    policy: ValidationPolicy
    criteria: tuple[CriterionResult, ...]
    rejected: tuple[FileIssue, ...]
    quarantined: tuple[FileIssue, ...]
    warnings: tuple[FileIssue, ...]
    accepted: tuple[str, ...]
    summary: ValidationSummary

    @property
    def failed(self) -> tuple[CriterionResult, ...]:
        """The criteria that block the run."""
        return tuple(c for c in self.criteria if c.blocking and not c.passed)

    def criterion(self, name: str) -> CriterionResult:
        """The result of criterion ``name``."""
        for result in self.criteria:
            if result.name == name:
                return result
        raise KeyError(f"no criterion {name!r}; known: {[c.name for c in self.criteria]}")

    def to_report(self) -> dict[str, Any]:
        """The JSON report (see docs/data-validation.md)."""
        report: dict[str, Any] = {
            "schema": REPORT_SCHEMA,
            "dataset": str(self.data_path),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "ok": self.ok,
            "mode": "quarantine" if self.policy.quarantine else "reject",
            "summary": self.summary.to_dict(),
            "criteria": [c.to_dict() for c in self.criteria],
            "rejected": [issue.to_dict() for issue in self.rejected],
            "quarantined": [issue.to_dict() for issue in self.quarantined],
            "warnings": [issue.to_dict() for issue in self.warnings],
            "policy": self.policy.model_dump(mode="json"),
        }
        if self.policy.quarantine:
            # the snapshot step reads this list to leave the quarantined files out
            report["accepted"] = list(self.accepted)
        return report

    def write_report(self, path: Path) -> Path:
        """Write the JSON report atomically (temporary file, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self.to_report(), handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def raise_for_failure(self) -> None:
        """Raise DataValidationError naming the failed criteria and the first bad files."""
        if self.ok:
            return
        parts = [_describe_failure(c) for c in self.failed]
        examples = ", ".join(f"{i.path} ({i.code})" for i in self.rejected[:3])
        suffix = f"; first rejected: {examples}" if examples else ""
        raise DataValidationError(
            f"dataset {self.data_path} failed {len(parts)} blocking criteria: "
            f"{'; '.join(parts)}{suffix}"
        )


def _describe_failure(result: CriterionResult) -> str:
    if result.name in FILE_CRITERIA:
        return f"{result.name} ({result.value} files)"
    return f"{result.name} (value {result.value}, threshold {result.threshold})"
