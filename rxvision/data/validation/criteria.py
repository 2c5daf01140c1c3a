"""The validation criteria: their names, their priority, which reason code belongs to which,
and whether a failure blocks the run or only warns by default.

Definitions, formulas and reason codes: docs/data-validation.md.
"""

from __future__ import annotations

from enum import StrEnum

from rxvision.data.decode import (
    CORRUPT,
    DECODE_TIMEOUT,
    DECODER_CRASH,
    DECOMPRESSION_BOMB,
    DUPLICATE,
    EMPTY_FILE,
    EXIF_ORIENTATION,
    FILE_TOO_LARGE,
    LABEL_CONFLICT,
    NOT_AN_IMAGE,
    NOT_RGB,
    SPLIT_LEAKAGE,
    TOO_SMALL,
    UNSUPPORTED_FORMAT,
)

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
