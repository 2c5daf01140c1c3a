"""RxVision's error types.

Every error names the bad value (a file, a key, a port) and, where there is a fixed set,
the allowed values, so that the CLI can print it as is and map it to an exit code.
"""

from __future__ import annotations


class RxVisionError(Exception):
    """Base class of every error RxVision raises on purpose."""

    exit_code: int = 1


class ConfigError(RxVisionError):
    """A config file or override is invalid; the message names the key."""

    exit_code = 2


class StackError(RxVisionError):
    """A local stack server failed to start, stop or answer its health check."""

    exit_code = 3


class PortInUseError(StackError):
    """A port the stack needs is held by another process."""


class NotFound(RxVisionError):
    """An object, file or model that was asked for does not exist."""

    exit_code = 4


class DataValidationError(RxVisionError):
    """A dataset failed a blocking validation criterion."""

    exit_code = 5


class SnapshotError(RxVisionError):
    """A dataset snapshot cannot be created, found or verified (e.g. a moved tag)."""

    exit_code = 6


class FeatureStoreError(RxVisionError):
    """A shard set cannot be built or read (the message names the file or key)."""


class EndpointUnreachable(RxVisionError):
    """A server (S3, MLflow, Airflow) does not answer at its URL; the message names it."""

    exit_code = 11


class AccessDenied(RxVisionError):
    """A server or the file system refused the credentials or permissions used."""

    exit_code = 12
