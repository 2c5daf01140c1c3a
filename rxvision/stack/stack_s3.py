"""The local stack's S3 endpoint (SeaweedFS) as its clients see it: answering, and holding
the configured buckets."""

from __future__ import annotations

import functools

from rxvision.errors import StackError
from rxvision.stack import services
from rxvision.stack.process import wait_until
from rxvision.storage.s3 import S3Config, S3Store


def stack_s3(layout: services.StackLayout) -> S3Store:
    """A client of the stack's S3 endpoint, with the stack's own credentials."""
    return S3Store(
        S3Config(
            endpoint_url=layout.s3_endpoint,
            access_key=layout.creds.s3_access_key,
            secret_key=layout.creds.s3_secret_key,
            region=layout.config.s3.region,
        )
    )


def s3_ready(layout: services.StackLayout) -> bool:
    """The S3 endpoint answers a bucket listing (raises otherwise)."""
    stack_s3(layout).client.list_buckets()
    return True


def create_buckets(layout: services.StackLayout) -> None:
    """Every configured bucket exists (``StackError`` naming one that cannot be made)."""
    store = stack_s3(layout)
    for bucket in layout.config.s3.buckets:
        # The filer may need a moment after the S3 port opens before creating buckets.
        create = functools.partial(_bucket_created, store, bucket)
        if not wait_until(create, 30, 0.5):
            raise StackError(f"could not create bucket {bucket!r} on {layout.s3_endpoint}")


def _bucket_created(store: S3Store, bucket: str) -> bool:
    store.ensure_bucket(bucket)
    return True
