"""One store for local paths and S3 URIs: listing (with version tags), atomic writes,
conditional writes, commits by move, deletes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from rxvision.errors import NotFound
from rxvision.storage.s3 import S3Config, S3Store
from rxvision.storage.uri_store import Storage, join, normalize_uri

pytestmark = pytest.mark.unit


def test_uris_have_one_spelling(tmp_path: Path) -> None:
    assert normalize_uri("s3://bkt/runs/") == "s3://bkt/runs"
    assert normalize_uri(f"file://{tmp_path}/a/../b/") == str(tmp_path / "b")
    assert join("s3://bkt/out/", "shards", "s.parquet") == "s3://bkt/out/shards/s.parquet"


def test_local_write_read_move_delete(tmp_path: Path) -> None:
    storage = Storage()
    tmp, final = str(tmp_path / "_tmp" / "x.bin"), str(tmp_path / "shards" / "x.bin")
    storage.write(tmp, b"rows")
    assert not [p for p in (tmp_path / "_tmp").iterdir() if p.name.endswith(".tmp")]
    storage.move(tmp, final)
    assert storage.read(final) == b"rows" and not storage.exists(tmp)
    assert storage.list(str(tmp_path)) == [final]
    assert storage.delete_prefix(str(tmp_path)) == 1
    with pytest.raises(NotFound):
        storage.read(final)


def test_local_conditional_write_refuses_a_stale_version(tmp_path: Path) -> None:
    storage, uri = Storage(), str(tmp_path / "latest.json")
    assert storage.read_tagged(uri) is None
    assert storage.write_if(uri, b"one", None)
    assert not storage.write_if(uri, b"two", None)  # it exists now
    found = storage.read_tagged(uri)
    assert found is not None and found[0] == b"one"
    assert storage.write_if(uri, b"two", found[1])
    assert not storage.write_if(uri, b"three", found[1])  # the version moved on
    assert storage.read(uri) == b"two"


def test_local_listing_tags_change_with_the_file(tmp_path: Path) -> None:
    storage, path = Storage(), tmp_path / "in" / "a.jpg"
    path.parent.mkdir()
    path.write_bytes(b"x")
    before = storage.list_tagged(str(tmp_path / "in"))
    path.write_bytes(b"xy")
    after = storage.list_tagged(str(tmp_path / "in"))
    assert set(before) == set(after) == {str(path)} and before != after
    assert storage.list_tagged(str(tmp_path / "missing")) == {}


@pytest.fixture
def s3_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Storage]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    # moto serves botocore's requests only: reads and listings go through botocore here,
    # as where a proxy is configured (the presigned ones: tests/integration/storage)
    monkeypatch.setattr("rxvision.storage.uri_store.presigned_reads", lambda client: None)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1")
        store = S3Store(S3Config(region="us-east-1"))
        store.ensure_bucket("bkt")
        yield Storage(store)


def test_s3_listing_carries_etag_and_size(s3_storage: Storage) -> None:
    s3_storage.write("s3://bkt/in/a.jpg", b"abc")
    s3_storage.write("s3://bkt/inbox/b.jpg", b"other prefix")
    tagged = s3_storage.list_tagged("s3://bkt/in")
    assert list(tagged) == ["s3://bkt/in/a.jpg"]
    etag, size = tagged["s3://bkt/in/a.jpg"].split(":")
    assert size == "3" and etag and '"' not in etag
    assert s3_storage.list("s3://bkt/in/") == ["s3://bkt/in/a.jpg"]


def test_s3_move_commits_and_removes_the_temporary_key(s3_storage: Storage) -> None:
    s3_storage.write("s3://bkt/out/_tmp/s.tmp", b"rows")
    s3_storage.move("s3://bkt/out/_tmp/s.tmp", "s3://bkt/out/shards/s.parquet")
    assert s3_storage.s3.get_bytes("s3://bkt/out/shards/s.parquet") == b"rows"
    assert not s3_storage.exists("s3://bkt/out/_tmp/s.tmp")
