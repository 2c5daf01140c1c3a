"""Listings through presigned ListObjectsV2 pages against the real SeaweedFS: the same
keys, ETags and sizes as botocore's paginator, awkward keys included, every page, a
missing bucket by name, and botocore kept where a proxy is configured."""

from __future__ import annotations

import http.server
import uuid
from collections.abc import Callable
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from rxvision.errors import NotFound
from rxvision.storage.presigned_listing import ListedObject, list_objects
from rxvision.storage.presigned_reads import PresignedReads, S3ReadFailed
from rxvision.storage.s3 import S3Config, S3Store
from rxvision.storage.uri_store import Storage

pytestmark = pytest.mark.integration

# what users name photos: spaces, plus signs, percent signs, XML's own characters, quotes,
# accents and other scripts (the store URL-encodes them in the listing; decoded here)
AWKWARD = [
    "a plain.jpg",
    "b+plus+sign.jpg",
    "c%20not-a-space.jpg",
    "d&amp<tag>.jpg",
    'e"quoted".jpg',
    "f-Übersicht-ß.jpg",
    "g-药片.jpg",
    "h/nested/deeper/i.jpg",
    "j~tilde=equals;semi,comma.jpg",
]


@pytest.fixture
def prefix(stack_env: dict[str, str]) -> str:
    S3Store().ensure_bucket("rxvision-data")
    return f"s3://rxvision-data/listing-{uuid.uuid4().hex[:8]}"


def botocore_listing(store: S3Store, bucket: str, prefix: str) -> dict[str, str]:
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {
        f"s3://{bucket}/{obj['Key']}": f"{str(obj['ETag']).strip(chr(34))}:{obj['Size']}"
        for page in pages
        for obj in page.get("Contents", [])
    }


def test_awkward_keys_list_as_botocore_lists_them(prefix: str) -> None:
    storage = Storage()
    for number, name in enumerate(AWKWARD):
        storage.write(f"{prefix}/{name}", b"x" * (number + 1))
    storage.write(f"{prefix}-sibling/outside.jpg", b"not under the prefix")
    assert isinstance(storage._presigned_reads(), PresignedReads)
    bucket, key = prefix[5:].split("/", 1)
    tagged = storage.list_tagged(prefix)
    assert tagged == botocore_listing(storage.s3, bucket, f"{key}/")
    assert sorted(tagged) == sorted(f"{prefix}/{name}" for name in AWKWARD)
    assert tagged[f"{prefix}/b+plus+sign.jpg"].endswith(":2")
    assert storage.list(prefix) == sorted(tagged)


def test_every_page_is_read_in_key_order(prefix: str) -> None:
    storage = Storage()
    names = [f"p{n:02d} {n}.jpg" for n in range(7)]
    for name in names:
        storage.write(f"{prefix}/{name}", name.encode())
    reads = storage._presigned_reads()
    assert reads is not None
    bucket, key = prefix[5:].split("/", 1)
    listed = list(list_objects(reads, bucket, f"{key}/", page_size=2))  # 4 pages
    assert [o.key for o in listed] == [f"{key}/{name}" for name in names]
    assert all(isinstance(o, ListedObject) and o.size == len(o.key.rsplit("/")[-1]) for o in listed)
    assert len({o.etag for o in listed}) == len(names)


def test_an_empty_prefix_lists_nothing_and_a_missing_bucket_is_named(prefix: str) -> None:
    storage = Storage()
    assert storage.list_tagged(f"{prefix}/nothing-here") == {}
    with pytest.raises(NotFound, match="no such S3 bucket: no-such-bucket-here"):
        storage.list("s3://no-such-bucket-here/in")


def test_a_proxy_leaves_listings_to_botocore(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Storage().write(f"{prefix}/q r+s.jpg", b"abc")
    direct = Storage().list_tagged(prefix)
    # what presigned_reads answers where a proxy would carry the requests
    # (tests/integration/storage/test_presigned_reads.py)
    monkeypatch.setattr("rxvision.storage.uri_store.presigned_reads", lambda client: None)
    proxied = Storage()
    assert proxied._presigned_reads() is None
    assert proxied.list_tagged(prefix) == direct
    assert proxied.list(prefix) == [f"{prefix}/q r+s.jpg"]


class OnePage(http.server.BaseHTTPRequestHandler):
    """A store answering every listing with one page of two keys, saying they are
    URL-encoded or not (``encoded``), and keeping the query it was asked."""

    encoded = True
    garbled = False
    asked: ClassVar[dict[str, list[str]]] = {}

    def do_GET(self) -> None:
        type(self).asked = parse_qs(urlsplit(self.path).query)
        said = "<EncodingType>url</EncodingType>" if self.encoded else ""
        entries = "".join(
            f"<Contents><Key>in/{key}</Key><ETag>&quot;e{n}&quot;</ETag><Size>{n}</Size></Contents>"
            for n, key in enumerate(["a+b%41.jpg", "c%2Bd.jpg"], start=1)
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>bkt</Name><Prefix>in/</Prefix><IsTruncated>false</IsTruncated>{entries}"
            f"{said}</ListBucketResult>"
        ).encode()
        if self.garbled:  # a proxy's error page, a truncated answer
            body = b"<html><body>Bad Gateway"
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def one_page(serve: Callable[..., str]) -> str:
    return serve(OnePage)


@pytest.mark.parametrize(
    ("encoded", "keys"),
    [(True, ["a bA.jpg", "c+d.jpg"]), (False, ["a+b%41.jpg", "c%2Bd.jpg"])],
)
def test_keys_are_decoded_only_when_the_page_says_so_as_botocore_does(
    one_page: str, monkeypatch: pytest.MonkeyPatch, encoded: bool, keys: list[str]
) -> None:
    monkeypatch.setattr(OnePage, "encoded", encoded)
    store = S3Store(S3Config(endpoint_url=one_page, access_key="a", secret_key="b"))
    listed = Storage(store).list_tagged("s3://bkt/in")
    assert OnePage.asked.get("encoding-type") == ["url"]
    assert listed == {f"s3://bkt/in/{key}": f"e{n}:{n}" for n, key in enumerate(keys, start=1)}
    assert listed == botocore_listing(store, "bkt", "in/")


def test_a_page_that_is_not_xml_is_an_error_naming_the_prefix(
    one_page: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OnePage, "garbled", True)
    store = S3Store(S3Config(endpoint_url=one_page, access_key="a", secret_key="b"))
    with pytest.raises(S3ReadFailed, match="s3://bkt/in/: the store's listing page is not XML"):
        Storage(store).list("s3://bkt/in")
