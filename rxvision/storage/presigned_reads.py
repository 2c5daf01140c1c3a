"""Reading many small S3 objects for less CPU: a presigned GET sent by urllib3.

The scoring job downloads every input photo as an object of its own (10-30 KB). Through
``client.get_object`` one GET costs ~1.4 ms of CPU on this machine (8 threads), most of
it botocore's per-request events, user agent, and response and timestamp parsing around
~0.3 ms of HTTP; that is a tenth of a photo's whole scoring. A URL presigned by the same
client (``generate_presigned_url``, botocore's documented way to hand a request to
another HTTP client) and sent by urllib3 costs ~0.65 ms (``bench/scoring_job.py``).

What botocore did for these reads is kept:
- retries of dropped connections, 5xx and throttling (``AWS_MAX_ATTEMPTS`` attempts,
  exponential backoff with jitter, at most 20 s: a ``Retry-After`` header is not obeyed,
  as botocore's standard mode does not, so no answer can park a worker); the client's
  timeouts and connection pool size;
- TLS verified against ``AWS_CA_BUNDLE`` (or the ``ca_bundle`` of the AWS config), else
  the bundle botocore uses;
- the response's checksum checked where the store sends one (asked for with
  ``x-amz-checksum-mode``, as botocore does): CRC32, SHA-1 or SHA-256; a body shorter than
  its ``Content-Length`` is an error (urllib3);
- errors by kind: 404 is ``NotFound``, 403 ``AccessDenied``, a store that does not answer
  ``EndpointUnreachable``, anything else ``S3ReadFailed`` with the status and S3's code.

Where a proxy would carry the request (``HTTPS_PROXY`` and the like, or the client's
``proxies``), ``presigned_reads`` answers None and reads stay with botocore.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.util.retry import Retry

from rxvision.errors import AccessDenied, EndpointUnreachable, NotFound, RxVisionError
from rxvision.storage.s3 import parse_s3_uri

# a signed URL is made per read: its lifetime only has to cover the retries
EXPIRES_S = 900
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound"})
CHECKSUM_MODE = {"x-amz-checksum-mode": "ENABLED"}
# a presigned URL's query: a credential for its object until it expires, never shown
SIGNED_QUERY = re.compile(r"\?[^\s'\"]*X-Amz-Signature=[^\s'\"]*", re.IGNORECASE)


def redact_signed(text: str) -> str:
    """``text`` with every presigned query replaced by ``?<signed>``."""
    return SIGNED_QUERY.sub("?<signed>", text)


class _RedactSigned(logging.Filter):
    """urllib3 logs requests and retries with their URL: without its signed query."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "X-Amz-" in message:
            record.msg, record.args = redact_signed(message), None
        return True


# the loggers of urllib3's modules that name a request's URL (a filter is per logger)
for _name in ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry"):
    logging.getLogger(_name).addFilter(_RedactSigned())


def _crc32(data: bytes) -> bytes:
    return zlib.crc32(data).to_bytes(4, "big")


# the checksum headers S3 may answer with, and how to compute each (the standard library's)
CHECKSUMS: Mapping[str, Callable[[bytes], bytes]] = {
    "x-amz-checksum-crc32": _crc32,
    "x-amz-checksum-sha1": lambda data: hashlib.sha1(data).digest(),
    "x-amz-checksum-sha256": lambda data: hashlib.sha256(data).digest(),
}


class S3ReadFailed(RxVisionError):
    """A GET the store answered with an error other than 403 or 404."""

    def __init__(self, message: str, status: int, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class PresignedReads:
    """GETs of whole objects through presigned URLs of ``client`` (a boto3 S3 client)."""

    def __init__(self, client: Any, *, attempts: int, ca_certs: str) -> None:
        config = client.meta.config
        self._client = client
        self._endpoint = str(client.meta.endpoint_url)
        self._http = urllib3.PoolManager(
            maxsize=config.max_pool_connections,
            timeout=urllib3.Timeout(connect=config.connect_timeout, read=config.read_timeout),
            retries=Retry(
                total=max(0, attempts - 1),
                status_forcelist=RETRY_STATUSES,
                allowed_methods=frozenset({"GET"}),
                backoff_factor=0.5,
                backoff_max=20,
                backoff_jitter=0.5,
                respect_retry_after_header=False,
                raise_on_status=False,  # the last answer is read below, with its S3 code
                redirect=False,
            ),
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_certs,
        )

    def read(self, uri: str) -> bytes:
        """An object's bytes, checked against its checksum when the store sends one."""
        bucket, key = parse_s3_uri(uri)
        url = self.presign("get_object", {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"})
        reply = self.get(url, uri, headers=CHECKSUM_MODE)
        check_checksum(uri, reply.headers, reply.data)
        return bytes(reply.data)

    def presign(self, operation: str, params: Mapping[str, Any]) -> str:
        """A URL for one ``operation`` of the client with ``params``, signed by it."""
        return str(
            self._client.generate_presigned_url(operation, Params=dict(params), ExpiresIn=EXPIRES_S)
        )

    def get(
        self, url: str, what: str, headers: Mapping[str, str] | None = None
    ) -> urllib3.BaseHTTPResponse:
        """The store's 200 answer to a GET of the presigned ``url`` (retried as botocore
        would); errors by kind, naming ``what`` (the object or prefix) and never the URL."""
        try:
            reply = self._http.request("GET", url, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            # MaxRetryError names the URL: say what broke, never the signed query
            why = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
            raise EndpointUnreachable(
                f"S3 endpoint {self._endpoint} unreachable reading {what}: "
                + redact_signed(f"{type(why).__name__}: {why}")
            ) from None
        if reply.status != 200:
            raise _read_error(what, reply.status, reply.data)
        return reply


def check_checksum(uri: str, headers: Mapping[str, str], data: bytes) -> None:
    """Raise ``S3ReadFailed`` when the body does not match a checksum header the store
    sent (the first it sent that is known here; none sent: nothing to check)."""
    for header, digest in CHECKSUMS.items():
        expected = headers.get(header)
        if expected is None:
            continue
        got = base64.b64encode(digest(data)).decode()
        if got != expected:
            raise S3ReadFailed(
                f"S3 object {uri}: body does not match its {header} ({got} != {expected})",
                200,
                "ChecksumMismatch",
            )
        return


def _read_error(uri: str, status: int, body: bytes) -> RxVisionError:
    code = _xml_field(body, "Code")
    message = _xml_field(body, "Message")
    if status == 404 or code in MISSING_CODES:
        return NotFound(f"no such S3 object: {uri}")
    if status == 403:
        return AccessDenied(f"S3 refused reading {uri}: {code or status} {message}".rstrip())
    return S3ReadFailed(f"S3 GET {uri} failed: {status} {code} {message}".rstrip(), status, code)


def _xml_field(body: bytes, name: str) -> str:
    """A field of S3's XML error document ('' when absent): two fields, no XML parser
    handed a server's body."""
    found = re.search(rf"<{name}>([^<]{{0,300}})</{name}>".encode(), body[:4096])
    return found.group(1).decode(errors="replace") if found else ""


def presigned_reads(client: Any) -> PresignedReads | None:
    """Presigned reads for ``client``, with its retries, or None where a proxy would carry
    its requests (botocore knows the proxy settings; these reads do not)."""
    config = client.meta.config
    if config.proxies or _proxied(str(client.meta.endpoint_url)):
        return None
    attempts = int((config.retries or {}).get("total_max_attempts") or 5)
    return PresignedReads(client, attempts=attempts, ca_certs=_ca_bundle())


def _proxied(endpoint: str) -> bool:
    parts = urlsplit(endpoint)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def _ca_bundle() -> str:
    """The CA bundle botocore would verify against: ``AWS_CA_BUNDLE`` or the config's
    ``ca_bundle``, else its default (certifi's)."""
    import botocore.session
    from botocore.httpsession import get_cert_path

    configured = botocore.session.get_session().get_config_variable("ca_bundle")
    return str(configured or get_cert_path(True))
