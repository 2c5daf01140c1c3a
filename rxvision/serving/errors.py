"""The errors of batch scoring: a shard that cannot be scored, a run that is not
complete, an input with no image, a store that is down (exit code 9, or 4 for no input)."""

from __future__ import annotations

from rxvision.errors import NotFound, RxVisionError


class ScoringError(RxVisionError):
    """A shard cannot be scored (no model loads) or a run is not complete."""

    exit_code = 9


class PrimaryUnavailable(ScoringError):
    """The primary model cannot be loaded and this try may not fall back: nothing is
    committed, and the task's retry loads it again."""


class NoInputImages(NotFound):
    """The input folder does not exist, or the input holds no image (a path typo must
    not look like a night with no images)."""


class StorageUnavailable(ScoringError):
    """The object store itself failed (connection refused, 5xx): retry the shard later."""
