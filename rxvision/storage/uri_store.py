"""Objects addressed by URI: one store for ``s3://`` URIs and local paths alike.

``Storage`` holds the few object operations the batch scorer, the inference cache, the
processed-keys manifest and the review gallery need (list, list with version tags, read,
write, conditional write, move, delete), and picks S3 (``rxvision.storage.s3.S3Store``)
or the local disk by the URI's form. Writes never leave half an object: a local file is
written under a temporary name and renamed; a commit (``move``) is an S3 server-side
copy then delete, or an atomic rename.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rxvision.errors import EndpointUnreachable, NotFound
from rxvision.storage.presigned_listing import ListedObject, list_objects
from rxvision.storage.presigned_reads import PresignedReads, S3ReadFailed, presigned_reads
from rxvision.storage.s3 import S3Store, parse_s3_uri


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for S3 URIs and local paths alike."""
    return "/".join([root.rstrip("/"), *parts])


def normalize_uri(uri: str) -> str:
    """An S3 URI without a trailing slash, or an absolute local path: one spelling per
    location, so that keys and plans compare equal across runs."""
    if uri.startswith("s3://"):
        parse_s3_uri(uri)
        return uri.rstrip("/")
    return str(Path(uri.removeprefix("file://")).expanduser().resolve())


class Storage:
    """The object operations RxVision's batch jobs need, on ``s3://`` URIs or local paths."""

    def __init__(self, s3: S3Store | None = None) -> None:
        self._s3 = s3
        self._reads: PresignedReads | None = None
        self._reads_built = False
        self._reads_lock = threading.Lock()

    @property
    def s3(self) -> S3Store:
        """The S3 client wrapper (built on first use)."""
        if self._s3 is None:
            self._s3 = S3Store()
        return self._s3

    def list(self, root: str) -> list[str]:
        """Every object under ``root`` (a prefix or a folder), sorted, as full URIs/paths."""
        if root.startswith("s3://"):
            bucket, prefix = parse_s3_uri(root)
            prefix = f"{prefix.rstrip('/')}/" if prefix else ""
            return sorted(f"s3://{bucket}/{o.key}" for o in self._listed(bucket, prefix))
        folder = Path(root)
        if not folder.is_dir():
            return []
        return sorted(str(p) for p in folder.rglob("*") if p.is_file())

    def list_tagged(self, root: str) -> dict[str, str]:
        """Every object under ``root`` (full URI -> ``etag:size``), from the listing
        alone: S3's ListObjectsV2 carries both. A local file's tag is its size and mtime."""
        if root.startswith("s3://"):
            bucket, prefix = parse_s3_uri(root)
            prefix = f"{prefix.rstrip('/')}/" if prefix else ""
            return {
                f"s3://{bucket}/{o.key}": f"{o.etag}:{o.size}" for o in self._listed(bucket, prefix)
            }
        folder = Path(root)
        if not folder.is_dir():
            return {}
        tagged = {}
        for path in folder.rglob("*"):
            if path.is_file():
                stat = path.stat()
                tagged[str(path)] = f"{stat.st_mtime_ns}:{stat.st_size}"
        return tagged

    def _listed(self, bucket: str, prefix: str) -> Iterator[ListedObject]:
        """The objects under ``prefix``: by presigned ListObjectsV2 pages
        (``rxvision.storage.presigned_listing``: a quarter of botocore's CPU per key)
        unless a proxy is configured."""
        reads = self._presigned_reads()
        if reads is not None:
            return list_objects(reads, bucket, prefix)
        return (
            ListedObject(str(obj["Key"]), str(obj["ETag"]).strip('"'), int(obj["Size"]))
            for page in self.s3.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for obj in page.get("Contents", [])
        )

    def read(self, uri: str) -> bytes:
        """An object's bytes; ``NotFound`` when missing. On S3 a presigned GET
        (``rxvision.storage.presigned_reads``: half the CPU of botocore's) unless a proxy
        is configured."""
        if uri.startswith("s3://"):
            reads = self._presigned_reads()
            return reads.read(uri) if reads is not None else self.s3.get_bytes(uri)
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"no such file: {uri}") from exc

    def _presigned_reads(self) -> PresignedReads | None:
        # built once, by whichever download thread reads first
        with self._reads_lock:
            if not self._reads_built:
                self._reads, self._reads_built = presigned_reads(self.s3.client), True
            return self._reads

    def write(self, uri: str, data: bytes) -> None:
        """Write an object (local files through a temporary name: never half-written)."""
        if uri.startswith("s3://"):
            self.s3.put_bytes(uri, data)
            return
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def read_tagged(self, uri: str) -> tuple[bytes, str] | None:
        """An object's bytes and its version tag (the S3 ETag; a content hash locally),
        for ``write_if``; None when it does not exist."""
        if uri.startswith("s3://"):
            from botocore.exceptions import ClientError

            bucket, key = parse_s3_uri(uri)
            try:
                got = self.s3.client.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                    return None
                raise
            return bytes(got["Body"].read()), str(got["ETag"])
        path = Path(uri)
        if not path.is_file():
            return None
        data = path.read_bytes()
        return data, hashlib.sha256(data).hexdigest()

    def write_if(self, uri: str, data: bytes, match: str | None) -> bool:
        """Write ``data`` only if the object is still the version ``read_tagged`` saw
        (``match``; None: only if it does not exist). False when another writer came
        first. On S3 a conditional PUT (If-Match / If-None-Match: the store decides,
        atomically); locally under an exclusive lock on a sibling ``.lock`` file."""
        if uri.startswith("s3://"):
            return self._s3_write_if(uri, data, match)
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = self.read_tagged(uri)
            if (found[1] if found else None) != match:
                return False
            self.write(uri, data)
            return True

    def _s3_write_if(self, uri: str, data: bytes, match: str | None) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = parse_s3_uri(uri)
        condition = {"IfMatch": match} if match is not None else {"IfNoneMatch": "*"}
        try:
            self.s3.client.put_object(Bucket=bucket, Key=key, Body=data, **condition)
        except ClientError as exc:
            # 412: the object changed (or appeared) since it was read; 409: a concurrent
            # conditional write is in flight
            if _error_code(exc) in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                return False
            raise
        return True

    def delete(self, uri: str) -> None:
        """Delete one object (no error when it is already gone)."""
        if uri.startswith("s3://"):
            bucket, key = parse_s3_uri(uri)
            self.s3.client.delete_object(Bucket=bucket, Key=key)
            return
        Path(uri).unlink(missing_ok=True)

    def exists(self, uri: str) -> bool:
        """Whether an object exists."""
        return self.s3.exists(uri) if uri.startswith("s3://") else Path(uri).is_file()

    def move(self, src: str, dst: str) -> None:
        """Commit ``src`` as ``dst``: an S3 server-side copy (the object appears whole)
        then delete, or an atomic rename on a local disk."""
        if src.startswith("s3://"):
            src_bucket, src_key = parse_s3_uri(src)
            dst_bucket, dst_key = parse_s3_uri(dst)
            self.s3.client.copy_object(
                Bucket=dst_bucket, Key=dst_key, CopySource={"Bucket": src_bucket, "Key": src_key}
            )
            self.s3.client.delete_object(Bucket=src_bucket, Key=src_key)
            return
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)

    def delete_prefix(self, root: str) -> int:
        """Delete everything under ``root``; return how many objects."""
        if root.startswith("s3://"):
            return self.s3.delete_prefix(f"{root.rstrip('/')}/")
        found = self.list(root)
        for path in found:
            Path(path).unlink(missing_ok=True)
        return len(found)


def _error_code(exc: Any) -> str:
    """A botocore ``ClientError``'s error code (``NoSuchKey``, ``PreconditionFailed``)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def storage_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store is down rather than that one object is bad."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(
        exc,
        (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError, EndpointUnreachable),
    ):
        return True
    if isinstance(exc, S3ReadFailed):
        return exc.status >= 500
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500
    return False
