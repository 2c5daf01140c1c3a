"""A thin S3 client in the style of Airflow's S3Hook, with no Airflow import.

Plain config in, a lazily built boto3 client, one method per verb, a pure URI parser,
and a 404 mapped to ``NotFound``. Endpoint and credentials come from the standard
variables (``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, ...) unless given, so the same
code talks to SeaweedFS, MinIO and AWS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from rxvision.errors import NotFound, RxVisionError


class S3UriError(RxVisionError):
    """A string that is not an ``s3://bucket/key`` URI."""

    exit_code = 2


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key/part`` into ``("bucket", "key/part")``."""
    if not uri.startswith("s3://"):
        raise S3UriError(f"not an S3 URI (expected s3://bucket/key): {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise S3UriError(f"S3 URI has no bucket: {uri!r}")
    return bucket, key


@dataclass(frozen=True)
class S3Config:
    """Where and as whom to talk S3. ``None`` fields fall back to boto3's standard lookup."""

    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    region: str | None = None
    max_pool_connections: int = 32

    @classmethod
    def from_env(cls) -> S3Config:
        """The standard variables (``AWS_ENDPOINT_URL_S3`` first, then ``AWS_ENDPOINT_URL``)."""
        return cls(
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL"),
            region=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"),
        )


def _is_missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}


class S3Store:
    """S3 operations RxVision needs, over one lazily built boto3 client."""

    def __init__(self, config: S3Config | None = None) -> None:
        self.config = config or S3Config.from_env()

    @cached_property
    def client(self) -> Any:
        """The boto3 S3 client (built on first use, not in ``__init__``)."""
        cfg = self.config
        # A session of its own: boto3's default session caches the credentials it first
        # found in the environment for the whole process, so a store made after the
        # variables changed (another stack, a rotated key) would sign with stale ones.
        return boto3.session.Session().client(
            "s3",
            endpoint_url=cfg.endpoint_url,
            aws_access_key_id=cfg.access_key,
            aws_secret_access_key=cfg.secret_key,
            region_name=cfg.region or "us-east-1",
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                # the standard variable wins (a CLI that must fail fast sets it to 1)
                retries={"max_attempts": _max_attempts(), "mode": "standard"},
                max_pool_connections=cfg.max_pool_connections,
            ),
        )

    def ensure_bucket(self, bucket: str) -> bool:
        """Create ``bucket`` if it does not exist; return whether it was created."""
        try:
            self.client.head_bucket(Bucket=bucket)
            return False
        except ClientError as exc:
            if not _is_missing(exc):
                raise
        self.client.create_bucket(Bucket=bucket)
        return True

    def put_bytes(self, uri: str, data: bytes) -> None:
        """Write an object."""
        bucket, key = parse_s3_uri(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def get_bytes(self, uri: str) -> bytes:
        """Read an object; ``NotFound`` when it does not exist."""
        bucket, key = parse_s3_uri(uri)
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            return bytes(body.read())
        except ClientError as exc:
            if _is_missing(exc):
                raise NotFound(f"no such S3 object: {uri}") from exc
            raise

    def get_head(self, uri: str, length: int) -> tuple[bytes, int]:
        """The first ``length`` bytes of an object (fewer when it is shorter) and its whole
        size, in one ranged GET; ``NotFound`` when it does not exist."""
        bucket, key = parse_s3_uri(uri)
        try:
            reply = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{length - 1}")
            head = bytes(reply["Body"].read())
        except ClientError as exc:
            if _is_missing(exc):
                raise NotFound(f"no such S3 object: {uri}") from exc
            raise
        # "bytes 0-1023/123456"; a server that ignores the range sends the whole object
        total = str(reply.get("ContentRange") or "").rpartition("/")[2]
        return head, int(total) if total.isdigit() else len(head)

    def presigned_get(self, uri: str, expires_s: int = 7 * 24 * 3600) -> str:
        """A time-limited HTTP(S) URL that reads the object with no credentials (signed
        here, with no request: a browser opens it)."""
        bucket, key = parse_s3_uri(uri)
        params = {"Bucket": bucket, "Key": key}
        return str(
            self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
        )

    def exists(self, uri: str) -> bool:
        """Whether an object exists."""
        bucket, key = parse_s3_uri(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise

    def upload_file(self, path: Path, uri: str) -> None:
        """Upload a local file (multipart for large ones)."""
        bucket, key = parse_s3_uri(uri)
        self.client.upload_file(str(path), bucket, key)

    def download_file(self, uri: str, path: Path) -> None:
        """Download to ``path`` through a temporary file, so ``path`` is never half-written."""
        bucket, key = parse_s3_uri(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        try:
            self.client.download_file(bucket, key, str(tmp))
        except ClientError as exc:
            tmp.unlink(missing_ok=True)
            if _is_missing(exc):
                raise NotFound(f"no such S3 object: {uri}") from exc
            raise
        tmp.replace(path)

    def list_keys(self, uri: str) -> Iterator[str]:
        """Keys under an ``s3://bucket/prefix`` (paginated, in key order)."""
        bucket, prefix = parse_s3_uri(uri)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield str(obj["Key"])

    def delete_prefix(self, uri: str) -> int:
        """Delete every object under a prefix; return how many."""
        bucket, _ = parse_s3_uri(uri)
        keys = list(self.list_keys(uri))
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
        return len(keys)


def _max_attempts(default: int = 5) -> int:
    """``AWS_MAX_ATTEMPTS`` when set (boto3's own variable), else ``default``."""
    try:
        return max(1, int(os.environ.get("AWS_MAX_ATTEMPTS") or default))
    except ValueError:
        return default
