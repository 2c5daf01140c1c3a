"""Dataset validation: checks an image dataset against production criteria before training.

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

Files are decoded in isolated worker processes (``rxvision.data.decode_pool``), fed lazily
in small chunks from a streaming directory walk: memory holds paths and hashes, never
images.

Modules, one concept each: ``criteria`` (names, priority, severities), ``policy``
(ValidationPolicy), ``walk`` (the streaming directory walk), ``scan`` (decoding in worker
processes), ``file_checks`` (format, colour space, resolution, EXIF), ``duplicates``
(same bytes filed twice), ``verdict`` (criteria judged, class balance), ``report``
(ValidationResult and its JSON), ``validator`` (DataValidator, tying them together).
This package exposes the public API below.
"""

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
)
from rxvision.data.validation.criteria import CRITERIA, Severity
from rxvision.data.validation.policy import ValidationPolicy
from rxvision.data.validation.report import (
    CriterionResult,
    FileIssue,
    ValidationResult,
    ValidationSummary,
)
from rxvision.data.validation.validator import DataValidator

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
