"""Library errors the CLI meets, mapped to ``RxVisionError`` subclasses in one place.

``rxvision.cli.main.run_app`` calls ``translate`` on any exception that is not already an
``RxVisionError``: an error it knows (an unreachable endpoint, refused credentials, a
missing file, an undecodable image, an invalid value) becomes a one-line message naming
the thing, with a documented exit code (docs/exit-codes.md). Anything else is a bug and
keeps its traceback (``--verbose``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from rxvision.errors import (
    AccessDenied,
    ConfigError,
    DataValidationError,
    EndpointUnreachable,
    NotFound,
    RxVisionError,
)

# exit code of an exception nobody expected (a bug): sysexits' EX_SOFTWARE
UNEXPECTED_EXIT_CODE = 70

# S3 error codes that mean "these credentials are wrong or not allowed"
_S3_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "403",
}
_S3_MISSING_CODES = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}
# how an MLflow REST call that never reached its server reads
_UNREACHABLE_WORDS = (
    "Connection refused",
    "Max retries exceeded",
    "NewConnectionError",
    "Failed to establish a new connection",
    "Name or service not known",
    "timed out",
    "timeout exception",
)
_MLFLOW_URL = re.compile(r"API request to (\S+?)\.? failed")


def host_port(url: str | None) -> str:
    """``host:port`` of a URL (the URL itself when it has no host)."""
    if not url:
        return "(unset)"
    parts = urlsplit(url)
    if not parts.hostname:
        return url
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return f"{parts.hostname}:{port}" if port else parts.hostname


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes, outermost first (a cycle is cut)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def translate(exc: BaseException) -> RxVisionError | None:
    """The ``RxVisionError`` a known library error means, or None (a bug: keep the
    traceback). The outermost error that maps wins; an ``RxVisionError`` in the chain is
    returned as it is."""
    for link in _chain(exc):
        if isinstance(link, RxVisionError):
            return link
        mapped = _translate_one(link)
        if mapped is not None:
            return mapped
    return None


def _translate_one(exc: BaseException) -> RxVisionError | None:
    for mapper in (_botocore, _mlflow, _requests, _pydantic, _yaml, _image, _os):
        mapped = mapper(exc)
        if mapped is not None:
            return mapped
    return None


def _s3_endpoint() -> str:
    return (
        os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or "https://s3.amazonaws.com"
    )


def _botocore(exc: BaseException) -> RxVisionError | None:
    try:
        from botocore import exceptions as bex
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    if isinstance(exc, bex.EndpointConnectionError | bex.ConnectTimeoutError):
        url = str(getattr(exc, "kwargs", {}).get("endpoint_url") or _s3_endpoint())
        return EndpointUnreachable(
            f"S3 endpoint {host_port(url)} unreachable ({url}): check AWS_ENDPOINT_URL_S3 "
            "or start the stack (rxvision stack up)"
        )
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return AccessDenied(
            f"no S3 credentials for {host_port(_s3_endpoint())}: set AWS_ACCESS_KEY_ID and "
            'AWS_SECRET_ACCESS_KEY (or eval "$(rxvision stack env)")'
        )
    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        where = f"S3 {host_port(_s3_endpoint())} ({exc.operation_name})"
        if code in _S3_AUTH_CODES or status == 403:
            key = os.environ.get("AWS_ACCESS_KEY_ID", "(unset)")
            return AccessDenied(
                f"{where} refused the credentials of access key {key}: {code or status} "
                "(check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
            )
        if code in _S3_MISSING_CODES or status == 404:
            bucket = error.get("BucketName")
            key_name = error.get("Key")
            thing = (
                f"bucket {bucket}"
                if code == "NoSuchBucket" and bucket
                else f"key {key_name}"
                if key_name
                else (error.get("Message") or code)
            )
            return NotFound(f"{where}: no such {thing} ({code or status})")
        return RxVisionError(f"{where} failed: {code} {error.get('Message', '')}".strip())
    if isinstance(exc, bex.BotoCoreError):
        return EndpointUnreachable(f"S3 {host_port(_s3_endpoint())}: {exc}")
    return None


def _mlflow(exc: BaseException) -> RxVisionError | None:
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return None
    if not isinstance(exc, MlflowException):
        return None
    message = " ".join(str(exc.message).split())
    match = _MLFLOW_URL.search(message)
    url = match.group(1) if match else os.environ.get("MLFLOW_TRACKING_URI")
    where = f"MLflow {host_port(url)}" if url and "://" in url else "MLflow"
    if any(word in message for word in _UNREACHABLE_WORDS):
        return EndpointUnreachable(
            f"{where} unreachable: the tracking server at {url} does not answer "
            "(check MLFLOW_TRACKING_URI or start the stack: rxvision stack up)"
        )
    code = str(getattr(exc, "error_code", ""))
    if code == "RESOURCE_DOES_NOT_EXIST":
        return NotFound(f"{where}: {message}")
    if code in {"UNAUTHENTICATED", "PERMISSION_DENIED", "CUSTOMER_UNAUTHORIZED"}:
        return AccessDenied(f"{where} refused the request: {message}")
    if code == "INVALID_PARAMETER_VALUE":
        return ConfigError(f"{where}: {message}")
    return RxVisionError(f"{where}: {message}")


def _requests(exc: BaseException) -> RxVisionError | None:
    import requests

    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        request = getattr(exc, "request", None)
        url = getattr(request, "url", None)
        return EndpointUnreachable(
            f"{host_port(url)} unreachable ({url or 'no URL'}): {type(exc).__name__}"
        )
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        url = exc.response.url
        status = exc.response.status_code
        if status in (401, 403):
            return AccessDenied(f"{host_port(url)} refused the credentials ({status}): {url}")
        if status == 404:
            return NotFound(f"{host_port(url)}: not found (404): {url}")
        return RxVisionError(f"{host_port(url)} answered {status}: {url}")
    return None


def _pydantic(exc: BaseException) -> RxVisionError | None:
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return None
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )
    return ConfigError(f"invalid {exc.title}: {problems}")


def _yaml(exc: BaseException) -> RxVisionError | None:
    import yaml

    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        name = getattr(mark, "name", None) or "YAML"
        return ConfigError(f"{name}{where}: {' '.join(str(exc).split())}")
    return None


def _image(exc: BaseException) -> RxVisionError | None:
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError | Image.DecompressionBombError):
        return DataValidationError(
            f"{' '.join(str(exc).split())} (run `rxvision data validate` on the folder "
            "and leave the rejected files out)"
        )
    return None


def _os(exc: BaseException) -> RxVisionError | None:
    if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError):
        name = exc.filename or "a path"
        return NotFound(f"{name}: {exc.strerror or exc}")
    if isinstance(exc, PermissionError):
        return AccessDenied(f"{exc.filename or 'a path'}: {exc.strerror or exc}")
    if type(exc) is OSError and exc.filename:  # disk full, read-only: not a bug
        return RxVisionError(f"{exc.filename}: {exc.strerror or exc}")
    return None
