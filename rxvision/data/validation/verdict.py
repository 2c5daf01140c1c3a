"""The verdict: what the scan measured, judged criterion by criterion against the policy.

Each file is rejected (its first blocking reason code, in criterion priority order) or
accepted, its non-blocking findings kept as warnings; then the dataset criteria: class
count, class balance (``1 - min_count / max_count`` per split, over accepted images) and,
in quarantine mode, the quarantine limit. The result is a ValidationResult.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from rxvision.data.decode import CLASS_IMBALANCE, QUARANTINE_LIMIT, TOO_FEW_CLASSES
from rxvision.data.validation.criteria import (
    CLASS_BALANCE,
    CLASS_COUNT,
    CODE_CRITERION,
    COLOR_SPACE,
    FILE_CRITERIA,
    FORMAT,
    INTEGRITY,
    QUARANTINE,
    RESOLUTION,
    Severity,
)
from rxvision.data.validation.duplicates import flag_duplicates
from rxvision.data.validation.policy import ValidationPolicy
from rxvision.data.validation.report import (
    CriterionResult,
    FileIssue,
    ValidationResult,
    ValidationSummary,
)
from rxvision.data.validation.scan import ScanMetrics

log = logging.getLogger(__name__)


def judge_scan(
    metrics: ScanMetrics, policy: ValidationPolicy, source: str | None = None
) -> ValidationResult:
    """Every criterion judged on ``metrics``; ``ok`` is False when a blocking one failed.
    ``source`` names the dataset in the result and the log (default: the scan's root)."""
    flag_duplicates(metrics, policy.split_names)
    rejected, warnings, accepted = _sort_files(metrics, policy)
    quarantined = rejected if policy.quarantine else []
    counts = _class_counts(metrics, accepted)
    criteria = [_file_criterion(name, metrics, policy) for name in FILE_CRITERIA]
    criteria.append(_class_count(counts, policy))
    criteria.append(_class_balance(counts, policy))
    if policy.quarantine:
        criteria.append(_quarantine_limit(len(quarantined), len(metrics.entries), policy))
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
    _log_outcome(source or metrics.root, ok, summary)
    return ValidationResult(
        data_path=source or metrics.root,
        ok=ok,
        policy=policy,
        criteria=tuple(criteria),
        rejected=tuple(rejected),
        quarantined=tuple(quarantined),
        warnings=tuple(warnings),
        accepted=tuple(accepted),
        summary=summary,
    )


def _sort_files(
    metrics: ScanMetrics, policy: ValidationPolicy
) -> tuple[list[FileIssue], list[FileIssue], list[str]]:
    """Each file is rejected (one entry, its first blocking code) or accepted; its
    non-blocking issues become warnings."""
    rejected: list[FileIssue] = []
    warnings: list[FileIssue] = []
    accepted: list[str] = []
    for key in sorted(metrics.entries):
        issues = sorted(metrics.issues.get(key, []), key=_priority)
        blocking = [i for i in issues if policy.is_blocking(CODE_CRITERION[i.code])]
        warnings += [i for i in issues if i not in blocking]
        if blocking:
            rejected.append(_rejection(blocking))
        else:
            accepted.append(key)
    return rejected, warnings, accepted


def _file_criterion(name: str, metrics: ScanMetrics, policy: ValidationPolicy) -> CriterionResult:
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
    details.update(_file_thresholds(name, policy))
    return _judge(name, policy, passed=failed == 0, value=failed, threshold=0, details=details)


def _file_thresholds(name: str, policy: ValidationPolicy) -> dict[str, Any]:
    if name == RESOLUTION:
        return {"min_width": policy.min_width, "min_height": policy.min_height}
    if name == INTEGRITY:
        return {"max_pixels": policy.max_pixels, "file_timeout_s": policy.file_timeout_s}
    if name == FORMAT:
        return {"extensions": list(policy.extensions), "formats": list(policy.formats)}
    if name == COLOR_SPACE:
        return {"required": "RGB, 8 bits per channel"}
    return {}


def _class_count(counts: dict[str, dict[str, int]], policy: ValidationPolicy) -> CriterionResult:
    labels = sorted({label for per_split in counts.values() for label in per_split})
    return _judge(
        CLASS_COUNT,
        policy,
        passed=len(labels) >= policy.min_classes,
        value=len(labels),
        threshold=policy.min_classes,
        details={"classes": len(labels)},
    )


def _class_balance(counts: dict[str, dict[str, int]], policy: ValidationPolicy) -> CriterionResult:
    splits = {name: _balance(per_class) for name, per_class in counts.items()}
    worst = max((s["imbalance"] for s in splits.values()), default=0.0)
    return _judge(
        CLASS_BALANCE,
        policy,
        passed=worst <= policy.max_imbalance,
        value=round(worst, 4),
        threshold=policy.max_imbalance,
        details={"formula": "1 - min_count / max_count, per split", "splits": splits},
    )


def _quarantine_limit(quarantined: int, files: int, policy: ValidationPolicy) -> CriterionResult:
    fraction = quarantined / files if files else 0.0
    return _judge(
        QUARANTINE,
        policy,
        passed=fraction <= policy.max_quarantine_fraction,
        value=round(fraction, 4),
        threshold=policy.max_quarantine_fraction,
        details={"quarantined": quarantined, "files": files},
    )


def _judge(
    name: str,
    policy: ValidationPolicy,
    *,
    passed: bool,
    value: float | int,
    threshold: float | int,
    details: dict[str, Any],
) -> CriterionResult:
    severity = policy.severity_of(name)
    # in quarantine mode a file criterion's failures are excluded, not fatal
    quarantined = policy.quarantine and name in FILE_CRITERIA
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


def _priority(issue: FileIssue) -> int:
    return FILE_CRITERIA.index(CODE_CRITERION[issue.code])


def _rejection(blocking: list[FileIssue]) -> FileIssue:
    first = blocking[0]
    also = sorted({i.code for i in blocking[1:]} - {first.code})
    message = first.message + (f" (also: {', '.join(also)})" if also else "")
    return FileIssue(first.path, first.code, message)


def _class_counts(metrics: ScanMetrics, accepted: list[str]) -> dict[str, dict[str, int]]:
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


def _log_outcome(root: Path | str, ok: bool, summary: ValidationSummary) -> None:
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
