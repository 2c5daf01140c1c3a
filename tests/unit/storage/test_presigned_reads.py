"""What a presigned read checks in a reply: the store's checksum, and S3's error fields."""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest

from rxvision.errors import AccessDenied, NotFound
from rxvision.storage.presigned_reads import S3ReadFailed, _read_error, check_checksum

pytestmark = pytest.mark.unit

DATA = b"a pill photo's bytes" * 50


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("header", "digest"),
    [
        ("x-amz-checksum-crc32", zlib.crc32(DATA).to_bytes(4, "big")),
        ("x-amz-checksum-sha1", hashlib.sha1(DATA).digest()),
        ("x-amz-checksum-sha256", hashlib.sha256(DATA).digest()),
    ],
)
def test_a_body_that_does_not_match_the_stores_checksum_is_refused(
    header: str, digest: bytes
) -> None:
    check_checksum("s3://b/k.jpg", {header: b64(digest)}, DATA)
    changed = DATA[:-1] + b"!"
    with pytest.raises(S3ReadFailed, match=f"s3://b/k.jpg: body does not match its {header}"):
        check_checksum("s3://b/k.jpg", {header: b64(digest)}, changed)


def test_without_a_checksum_header_there_is_nothing_to_check() -> None:
    check_checksum("s3://b/k.jpg", {"etag": '"abc"', "x-amz-checksum-crc64nvme": "AAAA"}, DATA)


def test_errors_are_named_by_kind_with_s3s_code_and_message() -> None:
    body = b"<Error><Code>NoSuchKey</Code><Message>The key does not exist</Message></Error>"
    assert isinstance(_read_error("s3://b/k", 404, body), NotFound)
    denied = _read_error("s3://b/k", 403, b"<Error><Code>AccessDenied</Code></Error>")
    assert isinstance(denied, AccessDenied) and "AccessDenied" in str(denied)
    failed = _read_error("s3://b/k", 500, b"<Error><Code>InternalError</Code></Error>")
    assert isinstance(failed, S3ReadFailed) and failed.status == 500
    assert str(failed) == "S3 GET s3://b/k failed: 500 InternalError"
    # not XML at all: the status alone
    assert str(_read_error("s3://b/k", 502, b"<html>bad gateway")) == "S3 GET s3://b/k failed: 502"
