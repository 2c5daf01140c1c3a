"""DataValidator: checks an image dataset against production criteria before training.

Layout: ``DIR/<class>/.../<image>`` (one folder per drug product). A root laid out by
split, ``DIR/{train,val,test,...}/<class>/.../<image>``, is refused up front
(``rxvision.data.layout``): RxVision makes its own splits. Every file under a class folder
is checked; files elsewhere are listed as ignored, never dropped silently.

Criteria (definitions, formulas and reason codes: docs/data-validation.md):

- per file: integrity (decodes fully, no bomb, no crash, no hang), format, resolution,
  colour space (8-bit RGB), EXIF orientation;
- across files: label conflicts (same bytes under two products), split leakage (same
  bytes in two splits), duplicates (same bytes twice in one product);
- dataset: class balance (``1 - min_count / max_count <= max_imbalance`` per split),
  class count.

Files are decoded in isolated worker processes (``rxvision.data.decode``), fed lazily
in small chunks from a streaming directory walk: memory holds paths and hashes, never
images.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rxvision.data.decode import (
    CLASS_IMBALANCE,
    CORRUPT,
    DECODE_TIMEOUT,
    DECODER_CRASH,
    DECOMPRESSION_BOMB,
    DUPLICATE,
    EMPTY_FILE,
    EXIF_ORIENTATION,
    FILE_TOO_LARGE,
    IGNORED_FILE,
    LABEL_CONFLICT,
    NOT_AN_IMAGE,
    NOT_RGB,
    QUARANTINE_LIMIT,
    SPLIT_LEAKAGE,
    TOO_FEW_CLASSES,
    TOO_SMALL,
    UNSUPPORTED_FORMAT,
    DecodeLimits,
    DecodePool,
    FileFacts,
    FileTask,
    InspectFn,
    inspect_file,
)
from rxvision.data.layout import check_class_layout
from rxvision.errors import ConfigError, DataValidationError, NotFound

__all__ = [
    "CLASS_IMBALANCE",
    "CORRUPT",
    "CRITERIA",
    "DECODER_CRASH",
    "DECODE_TIMEOUT",
    "DECOMPRESSION_BOMB",
    "DUPLICATE",
    "EMPTY_FILE",
    "EXIF_ORIENTATION",
    "FILE_TOO_LARGE",
    "IGNORED_FILE",
    "LABEL_CONFLICT",
    "NOT_AN_IMAGE",
    "NOT_RGB",
    "QUARANTINE_LIMIT",
    "SPLIT_LEAKAGE",
    "TOO_FEW_CLASSES",
    "TOO_SMALL",
    "UNSUPPORTED_FORMAT",
    "CriterionResult",
    "DataValidator",
    "FileIssue",
    "Severity",
    "ValidationPolicy",
    "ValidationResult",
    "ValidationSummary",
]

log = logging.getLogger(__name__)

REPORT_SCHEMA = "rxvision.data-validation/1"

# --- criteria -----------------------------------------------------------------------------
INTEGRITY = "integrity"
FORMAT = "format"
RESOLUTION = "resolution"
COLOR_SPACE = "color_space"
LABEL_CONFLICTS = "label_conflicts"
SPLIT_LEAKAGE_CRITERION = "split_leakage"
DUPLICATES = "duplicates"
EXIF = "exif_orientation"
CLASS_BALANCE = "class_balance"
CLASS_COUNT = "class_count"
QUARANTINE = "quarantine_limit"

# File criteria in priority order: a file with several problems is rejected with the code
# of the first criterion that blocks.
FILE_CRITERIA = (
    INTEGRITY,
    FORMAT,
    COLOR_SPACE,
    RESOLUTION,
    LABEL_CONFLICTS,
    SPLIT_LEAKAGE_CRITERION,
    DUPLICATES,
    EXIF,
)
DATASET_CRITERIA = (CLASS_COUNT, CLASS_BALANCE, QUARANTINE)
CRITERIA = FILE_CRITERIA + DATASET_CRITERIA

CODE_CRITERION = {
    EMPTY_FILE: INTEGRITY,
    NOT_AN_IMAGE: INTEGRITY,
    CORRUPT: INTEGRITY,
    DECOMPRESSION_BOMB: INTEGRITY,
    FILE_TOO_LARGE: INTEGRITY,
    DECODE_TIMEOUT: INTEGRITY,
    DECODER_CRASH: INTEGRITY,
    UNSUPPORTED_FORMAT: FORMAT,
    NOT_RGB: COLOR_SPACE,
    TOO_SMALL: RESOLUTION,
    LABEL_CONFLICT: LABEL_CONFLICTS,
    SPLIT_LEAKAGE: SPLIT_LEAKAGE_CRITERION,
    DUPLICATE: DUPLICATES,
    EXIF_ORIENTATION: EXIF,
}

MODE_NAMES = {
    "1": "1-bit black and white (1)",
    "L": "grayscale (L)",
    "LA": "grayscale with alpha (LA)",
    "P": "palette (P)",
    "PA": "palette with alpha (PA)",
    "RGBA": "RGB with an alpha channel (RGBA)",
    "RGBX": "RGB with padding (RGBX)",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "Lab",
    "HSV": "HSV",
    "I": "32-bit integer grayscale (I)",
    "F": "32-bit float grayscale (F)",
}


class Severity(StrEnum):
    """What a failed criterion does: fail the run, or only warn."""

    BLOCKING = "blocking"
    WARNING = "warning"


DEFAULT_SEVERITY: dict[str, Severity] = {name: Severity.BLOCKING for name in CRITERIA} | {
    # a repeated photo of the right product does no harm beyond weight; say so, go on
    DUPLICATES: Severity.WARNING,
    # loaders that ignore EXIF see the stored pixels; for pills rotation does not matter
    EXIF: Severity.WARNING,
}


class ValidationPolicy(BaseModel):
    """Thresholds and what each criterion does when it fails."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_width: int = Field(default=224, ge=1, description="smallest accepted width, px")
    min_height: int = Field(default=224, ge=1, description="smallest accepted height, px")
    max_imbalance: float = Field(
        default=0.20, ge=0.0, le=1.0, description="1 - min/max class count"
    )
    min_classes: int = Field(default=2, ge=1)
    max_pixels: int = Field(default=50_000_000, ge=1, description="header width x height limit")
    max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    file_timeout_s: float = Field(default=10.0, gt=0.0, description="decode time limit per file")
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff")
    formats: tuple[str, ...] = ("JPEG", "PNG", "BMP", "GIF", "TIFF")
    split_names: tuple[str, ...] = ("train", "val", "test")
    quarantine: bool = False
    max_quarantine_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    severity: dict[str, Severity] = Field(default_factory=dict)

    @field_validator("extensions")
    @classmethod
    def _dotted_lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in value)

    @field_validator("formats")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(fmt.upper() for fmt in value)

    @field_validator("severity")
    @classmethod
    def _known_criteria(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        unknown = sorted(set(value) - set(CRITERIA))
        if unknown:
            raise ValueError(f"unknown criteria {unknown}; known: {list(CRITERIA)}")
        if value.get(INTEGRITY) == Severity.WARNING:
            raise ValueError(
                "integrity cannot be a warning: a file that does not decode cannot be "
                "trained on (use quarantine: true to exclude such files instead)"
            )
        return value

    def severity_of(self, criterion: str) -> Severity:
        """The configured severity of ``criterion``, else its default."""
        return self.severity.get(criterion, DEFAULT_SEVERITY[criterion])

    def is_blocking(self, criterion: str) -> bool:
        """True when a failure of ``criterion`` fails the run (or quarantines the file)."""
        return self.severity_of(criterion) is Severity.BLOCKING

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "policy") -> ValidationPolicy:
        """Build from a mapping; an invalid key raises ConfigError naming it."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in err['loc']) or '<root>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"{source}: invalid validation policy: {problems}") from exc

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> ValidationPolicy:
        """Read a YAML/JSON file: its ``data.validation`` or ``validation`` section, else
        the whole mapping; ``overrides`` (e.g. from CLI options) win."""
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read validation config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top, got {type(loaded).__name__}")
        section = loaded
        if isinstance(loaded.get("data"), dict) and "validation" in loaded["data"]:
            section = loaded["data"]["validation"]
        elif "validation" in loaded:
            section = loaded["validation"]
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: the validation section must be a mapping")
        return cls.from_mapping({**section, **overrides}, source=str(path))


# --- results ------------------------------------------------------------------------------


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
    """Everything one validation found; ``ok`` is False when a blocking criterion failed."""

    data_path: Path
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


# --- walking the dataset ------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    path: str
    key: str  # posix path relative to the dataset root
    label: str
    split: str | None


class _Walk:
    """Streams the files of a dataset folder and records its classes and ignored files."""

    def __init__(self, root: Path, split_names: tuple[str, ...]) -> None:
        self.root = root
        self.split_names = split_names
        self.classes: dict[str | None, list[str]] = {}
        self.ignored: list[FileIssue] = []
        top = _sorted_entries(root)
        dirs = [e for e in top if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
        self.layout = "split" if dirs and all(d.name in split_names for d in dirs) else "flat"
        if self.layout == "flat" and any(d.name in split_names for d in dirs):
            names = sorted(d.name for d in dirs if d.name in split_names)
            self.ignored.append(
                FileIssue(
                    None,
                    IGNORED_FILE,
                    f"folders {names} look like splits but sit beside class folders: "
                    "treated as classes",
                )
            )
        self._top = top

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names found, in policy order (empty for a flat layout)."""
        return tuple(s for s in self.split_names if s in self.classes)

    def files(self) -> Iterator[_Entry]:
        """Every file below a class folder, in a stable order."""
        if self.layout == "flat":
            yield from self._classes_in(self._top, prefix="", split=None)
            return
        for entry in self._top:
            if self._keep_dir(entry, entry.name):
                yield from self._classes_in(
                    _sorted_entries(Path(entry.path)), entry.name, entry.name
                )

    def _classes_in(
        self, entries: list[os.DirEntry[str]], prefix: str, split: str | None
    ) -> Iterator[_Entry]:
        labels = self.classes.setdefault(split, [])
        for entry in entries:
            key = f"{prefix}/{entry.name}" if prefix else entry.name
            if self._keep_dir(entry, key):
                labels.append(entry.name)
                yield from self._files_in(Path(entry.path), key, entry.name, split)

    def _keep_dir(self, entry: os.DirEntry[str], key: str) -> bool:
        """Directories to descend into; anything else at this level is listed as ignored."""
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            return True
        if entry.is_symlink() and entry.is_dir():
            reason = "a symlinked folder (not followed)"
        elif entry.is_dir(follow_symlinks=False):
            reason = "a hidden folder"
        else:
            reason = "a file outside any class folder"
        self.ignored.append(FileIssue(key, IGNORED_FILE, f"ignored: {reason}"))
        return False

    def _files_in(self, folder: Path, key: str, label: str, split: str | None) -> Iterator[_Entry]:
        # an explicit stack, not recursion: a hostile tree may nest deeper than Python's limit
        stack = [(folder, key)]
        while stack:
            here, here_key = stack.pop()
            subfolders = []
            for entry in _sorted_entries(here):
                child = f"{here_key}/{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append((Path(entry.path), child))
                elif entry.is_symlink() and entry.is_dir():
                    self.ignored.append(
                        FileIssue(child, IGNORED_FILE, "ignored: a symlinked folder (not followed)")
                    )
                else:
                    yield _Entry(entry.path, child, label, split)
            stack.extend(reversed(subfolders))


def _sorted_entries(folder: Path) -> list[os.DirEntry[str]]:
    # one folder's names at a time: sorting needs them, the walk as a whole streams
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        raise DataValidationError(f"cannot list dataset folder {folder}: {exc}") from exc


# --- the validator ------------------------------------------------------------------------


@dataclass
class _Metrics:
    """What the scan measured, before any criterion is judged."""

    root: Path
    walk: _Walk
    entries: dict[str, _Entry] = field(default_factory=dict)
    issues: dict[str, list[FileIssue]] = field(default_factory=lambda: defaultdict(list))
    hashes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    bytes: int = 0
    seconds: float = 0.0
    workers: int = 0

    def flag(self, key: str, code: str, message: str) -> None:
        """Record one problem of file ``key``."""
        self.issues[key].append(FileIssue(key, code, message))


ProgressFn = Callable[[int], None]


class DataValidator:
    """Validates a dataset folder against a ValidationPolicy.

    ``workers``: decode processes (default: one per usable core; 0 decodes in this process
    without isolation, for debugging). ``inspect`` replaces the per-file decoder (a test
    hook: it runs inside the workers, so it must be importable). ``progress(files_done)``
    is called as files finish. A calling script needs the usual
    ``if __name__ == "__main__":`` guard (workers re-import the main module).
    """

    def __init__(
        self,
        policy: ValidationPolicy | None = None,
        *,
        workers: int | None = None,
        chunk_size: int = 8,
        inspect: InspectFn = inspect_file,
        progress: ProgressFn | None = None,
    ) -> None:
        self.policy = policy or ValidationPolicy()
        self.workers = _default_workers() if workers is None else workers
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        self.chunk_size = chunk_size
        self.inspect = inspect
        self.progress = progress

    def validate_dataset(self, data_path: Path) -> ValidationResult:
        """Check every file and the dataset as a whole; never raises for a bad file.

        A folder laid out by split (``DIR/<split>/<class>/``) raises ``DataLayoutError``
        before any file is read (``rxvision.data.layout.check_class_layout``).
        """
        root = Path(data_path)
        if not root.is_dir():
            raise NotFound(f"dataset folder {root} does not exist or is not a folder")
        check_class_layout(root)  # DIR/<split>/<class>/ is refused (DataLayoutError)
        metrics = self._compute_metrics(root)
        return self._evaluate_criteria(metrics)

    # -- scan --

    def _compute_metrics(self, root: Path) -> _Metrics:
        started = time.perf_counter()
        metrics = _Metrics(root=root, walk=_Walk(root, self.policy.split_names))
        limits = DecodeLimits(
            max_pixels=self.policy.max_pixels, max_file_bytes=self.policy.max_file_bytes
        )
        pool = DecodePool(
            limits,
            workers=self.workers,
            file_timeout_s=self.policy.file_timeout_s,
            chunk_size=self.chunk_size,
            inspect=self.inspect,
        )
        done = 0
        with pool:
            for facts in pool.imap_unordered(self._tasks(metrics)):
                self._record(metrics, facts)
                done += 1
                if self.progress is not None:
                    self.progress(done)
        metrics.seconds = time.perf_counter() - started
        metrics.workers = self.workers
        return metrics

    def _tasks(self, metrics: _Metrics) -> Iterator[FileTask]:
        """Files to decode; a file with an unsupported extension is flagged, not decoded."""
        for entry in metrics.walk.files():
            metrics.entries[entry.key] = entry
            suffix = PurePosixPath(entry.key).suffix.lower()
            if suffix not in self.policy.extensions:
                metrics.flag(
                    entry.key,
                    UNSUPPORTED_FORMAT,
                    f"extension {suffix or '(none)'!r} not accepted "
                    f"(accepted: {', '.join(self.policy.extensions)})",
                )
                continue
            yield FileTask(entry.path, entry.key)

    def _record(self, metrics: _Metrics, facts: FileFacts) -> None:
        metrics.bytes += facts.size_bytes
        if facts.code is not None:
            metrics.flag(facts.key, facts.code, facts.message)
            return
        for code, message in _content_issues(facts, self.policy):
            metrics.flag(facts.key, code, message)
        if facts.sha256 is not None:
            metrics.hashes[facts.sha256].append(facts.key)

    # -- judge --

    def _evaluate_criteria(self, metrics: _Metrics) -> ValidationResult:
        _flag_duplicates(metrics, self.policy.split_names)
        rejected, warnings, accepted = self._sort_files(metrics)
        quarantined = rejected if self.policy.quarantine else []
        counts = _class_counts(metrics, accepted)
        criteria = [self._file_criterion(name, metrics) for name in FILE_CRITERIA]
        criteria.append(self._class_count(counts))
        criteria.append(self._class_balance(counts))
        if self.policy.quarantine:
            criteria.append(self._quarantine_limit(len(quarantined), len(metrics.entries)))
        warnings = [*metrics.walk.ignored, *warnings, *_dataset_warnings(criteria)]
        ok = not any(c.blocking and not c.passed for c in criteria)
        summary = ValidationSummary(
            files=len(metrics.entries),
            images_ok=len(accepted),
            rejected=len(rejected),
            quarantined=len(quarantined),
            warnings=len(warnings),
            classes=len({label for labels in metrics.walk.classes.values() for label in labels}),
            layout=metrics.walk.layout,
            splits=metrics.walk.splits,
            bytes=metrics.bytes,
            seconds=metrics.seconds,
            images_per_second=len(metrics.entries) / metrics.seconds if metrics.seconds else 0.0,
            workers=metrics.workers,
        )
        _log_outcome(metrics.root, ok, summary)
        return ValidationResult(
            data_path=metrics.root,
            ok=ok,
            policy=self.policy,
            criteria=tuple(criteria),
            rejected=tuple(rejected),
            quarantined=tuple(quarantined),
            warnings=tuple(warnings),
            accepted=tuple(accepted),
            summary=summary,
        )

    def _sort_files(self, metrics: _Metrics) -> tuple[list[FileIssue], list[FileIssue], list[str]]:
        """Each file is rejected (one entry, its first blocking code) or accepted; its
        non-blocking issues become warnings."""
        rejected: list[FileIssue] = []
        warnings: list[FileIssue] = []
        accepted: list[str] = []
        for key in sorted(metrics.entries):
            issues = sorted(metrics.issues.get(key, []), key=_priority)
            blocking = [i for i in issues if self.policy.is_blocking(CODE_CRITERION[i.code])]
            warnings += [i for i in issues if i not in blocking]
            if blocking:
                rejected.append(_rejection(blocking))
            else:
                accepted.append(key)
        return rejected, warnings, accepted

    def _file_criterion(self, name: str, metrics: _Metrics) -> CriterionResult:
        codes: Counter[str] = Counter()
        examples: list[str] = []
        for key, issues in metrics.issues.items():
            mine = {i.code for i in issues if CODE_CRITERION[i.code] == name}
            codes.update(mine)
            if mine and len(examples) < 5:
                examples.append(key)
        failed = sum(
            1
            for issues in metrics.issues.values()
            if any(CODE_CRITERION[i.code] == name for i in issues)
        )
        details: dict[str, Any] = {"codes": dict(sorted(codes.items()))}
        if examples:
            details["examples"] = sorted(examples)
        details.update(self._file_thresholds(name))
        return self._judge(name, passed=failed == 0, value=failed, threshold=0, details=details)

    def _file_thresholds(self, name: str) -> dict[str, Any]:
        policy = self.policy
        if name == RESOLUTION:
            return {"min_width": policy.min_width, "min_height": policy.min_height}
        if name == INTEGRITY:
            return {"max_pixels": policy.max_pixels, "file_timeout_s": policy.file_timeout_s}
        if name == FORMAT:
            return {"extensions": list(policy.extensions), "formats": list(policy.formats)}
        if name == COLOR_SPACE:
            return {"required": "RGB, 8 bits per channel"}
        return {}

    def _class_count(self, counts: dict[str, dict[str, int]]) -> CriterionResult:
        labels = sorted({label for per_split in counts.values() for label in per_split})
        return self._judge(
            CLASS_COUNT,
            passed=len(labels) >= self.policy.min_classes,
            value=len(labels),
            threshold=self.policy.min_classes,
            details={"classes": len(labels)},
        )

    def _class_balance(self, counts: dict[str, dict[str, int]]) -> CriterionResult:
        splits = {name: _balance(per_class) for name, per_class in counts.items()}
        worst = max((s["imbalance"] for s in splits.values()), default=0.0)
        return self._judge(
            CLASS_BALANCE,
            passed=worst <= self.policy.max_imbalance,
            value=round(worst, 4),
            threshold=self.policy.max_imbalance,
            details={"formula": "1 - min_count / max_count, per split", "splits": splits},
        )

    def _quarantine_limit(self, quarantined: int, files: int) -> CriterionResult:
        fraction = quarantined / files if files else 0.0
        return self._judge(
            QUARANTINE,
            passed=fraction <= self.policy.max_quarantine_fraction,
            value=round(fraction, 4),
            threshold=self.policy.max_quarantine_fraction,
            details={"quarantined": quarantined, "files": files},
        )

    def _judge(
        self,
        name: str,
        *,
        passed: bool,
        value: float | int,
        threshold: float | int,
        details: dict[str, Any],
    ) -> CriterionResult:
        severity = self.policy.severity_of(name)
        # in quarantine mode a file criterion's failures are excluded, not fatal
        quarantined = self.policy.quarantine and name in FILE_CRITERIA
        blocking = severity is Severity.BLOCKING and not quarantined
        if passed:
            status = "passed"
        elif severity is Severity.WARNING:
            status = "warning"
        else:
            status = "quarantined" if quarantined else "failed"
        return CriterionResult(
            name=name,
            passed=passed,
            blocking=blocking,
            severity=str(severity),
            status=status,
            value=value,
            threshold=threshold,
            details=details,
        )


def _default_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def _content_issues(facts: FileFacts, policy: ValidationPolicy) -> Iterator[tuple[str, str]]:
    """Policy checks of a file that decoded: format, colour space, size, orientation."""
    if facts.format not in policy.formats:
        yield (
            UNSUPPORTED_FORMAT,
            f"format {facts.format} not accepted (accepted: {', '.join(policy.formats)})",
        )
    if facts.mode != "RGB":
        name = MODE_NAMES.get(facts.mode or "", f"mode {facts.mode}")
        if (facts.mode or "").startswith("I;16"):
            name = f"16-bit grayscale ({facts.mode})"
        yield NOT_RGB, f"colour space is {name}, not 8-bit RGB"
    elif facts.bits and facts.bits != 8:
        yield NOT_RGB, f"{facts.bits} bits per channel, not 8-bit RGB"
    width, height = facts.width or 0, facts.height or 0
    if width < policy.min_width or height < policy.min_height:
        yield (
            TOO_SMALL,
            f"{width}x{height} px, under the minimum {policy.min_width}x{policy.min_height}",
        )
    if facts.orientation not in (None, 1):
        yield (
            EXIF_ORIENTATION,
            f"EXIF orientation {facts.orientation}: stored pixels are rotated or mirrored "
            "relative to how viewers show them",
        )


def _flag_duplicates(metrics: _Metrics, split_order: tuple[str, ...]) -> None:
    """Same bytes filed twice: under two labels (conflict), in two splits (leakage), or
    twice in one product (duplicate)."""
    for keys in metrics.hashes.values():
        if len(keys) < 2:
            continue
        keys = sorted(keys)
        entries = [metrics.entries[k] for k in keys]
        labels = sorted({e.label for e in entries})
        if len(labels) > 1:
            for entry in entries:
                others = _others(keys, entry.key)
                metrics.flag(
                    entry.key,
                    LABEL_CONFLICT,
                    f"same bytes as {others} filed under another product (labels: "
                    f"{', '.join(labels)})",
                )
            continue
        rank = {name: i for i, name in enumerate(split_order)}
        entries.sort(key=lambda e: (rank.get(e.split or "", -1), e.key))
        keeper = entries[0]
        for entry in entries[1:]:
            if entry.split != keeper.split:
                metrics.flag(
                    entry.key,
                    SPLIT_LEAKAGE,
                    f"same bytes as {keeper.key} in split {keeper.split}: a copy in "
                    f"{entry.split} leaks training data into evaluation",
                )
            else:
                metrics.flag(entry.key, DUPLICATE, f"same bytes as {keeper.key}")


def _others(keys: list[str], key: str, limit: int = 3) -> str:
    others = [k for k in keys if k != key]
    shown = ", ".join(others[:limit])
    return shown + (f" and {len(others) - limit} more" if len(others) > limit else "")


def _priority(issue: FileIssue) -> int:
    return FILE_CRITERIA.index(CODE_CRITERION[issue.code])


def _rejection(blocking: list[FileIssue]) -> FileIssue:
    first = blocking[0]
    also = sorted({i.code for i in blocking[1:]} - {first.code})
    message = first.message + (f" (also: {', '.join(also)})" if also else "")
    return FileIssue(first.path, first.code, message)


def _class_counts(metrics: _Metrics, accepted: list[str]) -> dict[str, dict[str, int]]:
    """Accepted images per class, per split ("all" for a flat layout); empty classes count 0."""
    counts: dict[str, dict[str, int]] = {
        split or "all": dict.fromkeys(labels, 0) for split, labels in metrics.walk.classes.items()
    }
    every_label = {label for per_split in counts.values() for label in per_split}
    for per_split in counts.values():
        # a class missing from one split has 0 images there
        for label in every_label:
            per_split.setdefault(label, 0)
    for key in accepted:
        entry = metrics.entries[key]
        counts[entry.split or "all"][entry.label] += 1
    return counts


def _balance(per_class: dict[str, int]) -> dict[str, Any]:
    if not per_class:
        return {"imbalance": 0.0, "counts": {}}
    low = min(per_class, key=lambda label: (per_class[label], label))
    high = max(per_class, key=lambda label: (per_class[label], label))
    largest = per_class[high]
    imbalance = 1.0 - per_class[low] / largest if largest else 1.0
    return {
        "imbalance": round(imbalance, 4),
        "min": {"label": low, "count": per_class[low]},
        "max": {"label": high, "count": largest},
        "counts": dict(sorted(per_class.items())),
    }


def _dataset_warnings(criteria: list[CriterionResult]) -> list[FileIssue]:
    codes = {
        CLASS_BALANCE: CLASS_IMBALANCE,
        CLASS_COUNT: TOO_FEW_CLASSES,
        QUARANTINE: QUARANTINE_LIMIT,
    }
    return [
        FileIssue(None, codes[c.name], f"{c.name}: value {c.value} against threshold {c.threshold}")
        for c in criteria
        if c.name in codes and c.status == "warning"
    ]


def _log_outcome(root: Path, ok: bool, summary: ValidationSummary) -> None:
    log.info(
        "validated %s: %d files, %d accepted, %d rejected, %.0f images/s with %d workers",
        root,
        summary.files,
        summary.images_ok,
        summary.rejected,
        summary.images_per_second,
        summary.workers,
    )
    if not ok:
        log.warning("dataset %s failed validation", root)
