"""Reads through presigned GETs against the real SeaweedFS: the bytes, the store's
checksum, errors by kind, retries, and botocore kept where a proxy is configured."""

from __future__ import annotations

import http.server
import logging
import socket
import traceback
import uuid
from collections.abc import Callable

import pytest
import urllib3

from rxvision.errors import AccessDenied, EndpointUnreachable, NotFound
from rxvision.storage.presigned_reads import PresignedReads, S3ReadFailed, presigned_reads
from rxvision.storage.s3 import S3Config, S3Store
from rxvision.storage.uri_store import Storage, storage_unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix(stack_env: dict[str, str]) -> str:
    S3Store().ensure_bucket("rxvision-data")
    return f"s3://rxvision-data/presigned-{uuid.uuid4().hex[:8]}"


def test_reads_are_presigned_gets_and_byte_exact(prefix: str) -> None:
    storage = Storage()
    data = bytes(range(256)) * 97
    storage.write(f"{prefix}/a.bin", data)
    assert isinstance(storage._presigned_reads(), PresignedReads)
    assert storage.read(f"{prefix}/a.bin") == data
    assert storage.read(f"{prefix}/a.bin") == storage.s3.get_bytes(f"{prefix}/a.bin")


def test_the_store_sends_the_checksum_the_reads_check(prefix: str) -> None:
    store = S3Store()
    store.put_bytes(f"{prefix}/c.bin", b"pills" * 1000)
    bucket, key = prefix[5:].split("/", 1)
    url = store.client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": f"{key}/c.bin", "ChecksumMode": "ENABLED"}
    )
    reply = urllib3.request("GET", url, headers={"x-amz-checksum-mode": "ENABLED"})
    # SeaweedFS answers with the CRC32 botocore stored on PUT: a body changed on the way
    # would fail its check (tests/unit/storage/test_presigned_reads.py)
    assert reply.status == 200 and "x-amz-checksum-crc32" in reply.headers


def test_a_missing_object_or_bucket_is_not_found(prefix: str) -> None:
    storage = Storage()
    with pytest.raises(NotFound, match="no such S3 object: s3://rxvision-data/"):
        storage.read(f"{prefix}/missing.jpg")
    with pytest.raises(NotFound, match="no-such-bucket-here"):
        storage.read("s3://no-such-bucket-here/a.jpg")


def test_refused_credentials_are_access_denied_not_an_outage(
    prefix: str, stack_env: dict[str, str]
) -> None:
    Storage().write(f"{prefix}/a.bin", b"x")
    wrong = S3Store(
        S3Config(
            endpoint_url=stack_env["AWS_ENDPOINT_URL_S3"],
            access_key=stack_env["AWS_ACCESS_KEY_ID"],
            secret_key="not-the-secret",
        )
    )
    with pytest.raises(AccessDenied, match=f"S3 refused reading {prefix}/a.bin") as caught:
        Storage(wrong).read(f"{prefix}/a.bin")
    assert not storage_unavailable(caught.value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def storage_at(endpoint: str) -> Storage:
    return Storage(S3Store(S3Config(endpoint_url=endpoint, access_key="a", secret_key="b")))


def test_a_store_that_does_not_answer_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    endpoint = f"http://127.0.0.1:{free_port()}"
    with (
        caplog.at_level(logging.DEBUG, logger="urllib3"),
        pytest.raises(EndpointUnreachable, match=f"S3 endpoint {endpoint} unreachable") as caught,
    ):
        storage_at(endpoint).read("s3://bkt/a.jpg")
    assert storage_unavailable(caught.value)
    assert "Connection refused" in str(caught.value) and "Max retries" not in str(caught.value)
    # the signed URL is a credential for the object: in no message, log line or traceback
    assert "Retrying" in caplog.text and "/bkt/a.jpg?<signed>" in caplog.text
    shown = str(caught.value) + caplog.text + "".join(traceback.format_exception(caught.value))
    assert "X-Amz-Signature" not in shown and "X-Amz-Credential" not in shown


class Unavailable(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint answering every GET with 503 SlowDown, counting them."""

    gets = 0

    def do_GET(self) -> None:
        type(self).gets += 1
        body = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
        self.send_response(503)
        self.send_header("Retry-After", "3600")  # not obeyed: no answer parks a worker
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def unavailable(serve: Callable[..., str]) -> str:
    Unavailable.gets = 0
    return serve(Unavailable)


def test_a_5xx_is_retried_then_an_outage_with_s3s_code(
    unavailable: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    storage = storage_at(unavailable)
    with (
        caplog.at_level(logging.DEBUG, logger="urllib3"),
        pytest.raises(S3ReadFailed, match="503 SlowDown Reduce your rate") as caught,
    ):
        storage.read("s3://bkt/a.jpg")
    assert caught.value.status == 503 and storage_unavailable(caught.value)
    assert "X-Amz-Signature" not in caplog.text  # urllib3 logs each retry's URL
    # every attempt botocore would have made, no more
    assert Unavailable.gets == storage.s3.client.meta.config.retries["total_max_attempts"] == 3


def test_a_proxy_leaves_reads_to_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    client = storage_at("http://127.0.0.1:9").s3.client
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert presigned_reads(client) is None
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert isinstance(presigned_reads(client), PresignedReads)
