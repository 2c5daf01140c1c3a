from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from rxvision.errors import NotFound
from rxvision.storage.s3 import S3Config, S3Store, S3UriError, parse_s3_uri

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("s3://b/k/x.jpg", ("b", "k/x.jpg")), ("s3://b", ("b", "")), ("s3://b/", ("b", ""))],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", ["http://b/k", "b/k", "s3:///k"])
def test_parse_s3_uri_refuses_non_s3(uri: str) -> None:
    with pytest.raises(S3UriError, match="S3 URI"):
        parse_s3_uri(uri)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> S3Store:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1")
        s = S3Store(S3Config(region="us-east-1"))
        s.ensure_bucket("bkt")
        yield s


def test_missing_object_maps_to_not_found(store: S3Store) -> None:
    with pytest.raises(NotFound, match="s3://bkt/missing"):
        store.get_bytes("s3://bkt/missing")
    assert store.exists("s3://bkt/missing") is False


def test_download_is_never_half_written(store: S3Store, tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(NotFound):
        store.download_file("s3://bkt/nope", target)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    store.put_bytes("s3://bkt/yes", b"abc")
    store.download_file("s3://bkt/yes", target)
    assert target.read_bytes() == b"abc"


def test_list_and_delete_prefix(store: S3Store) -> None:
    for i in range(3):
        store.put_bytes(f"s3://bkt/p/{i}", b"x")
    store.put_bytes("s3://bkt/q/0", b"x")
    assert list(store.list_keys("s3://bkt/p/")) == ["p/0", "p/1", "p/2"]
    assert store.delete_prefix("s3://bkt/p/") == 3
    assert list(store.list_keys("s3://bkt/")) == ["q/0"]


def test_ensure_bucket_is_idempotent(store: S3Store) -> None:
    assert store.ensure_bucket("bkt") is False
    assert store.ensure_bucket("new") is True
