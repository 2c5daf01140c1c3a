"""A review page committed to the stack's S3 (SeaweedFS): whole, served as HTML, alone."""

from __future__ import annotations

import uuid

from rxvision.serving.review_gallery import HTML_TYPE, commit_page
from rxvision.storage.s3 import parse_s3_uri
from rxvision.storage.uri_store import Storage


def test_a_page_replaced_on_s3_is_whole_html_and_leaves_no_other_object(
    stack_env: dict[str, str],
) -> None:
    storage = Storage()  # the stack's S3 from the standard variables stack_env sets
    run = f"s3://rxvision-predictions/it-review-{uuid.uuid4().hex[:8]}"
    # neither an .html suffix nor HTML-looking bytes: SeaweedFS would guess text/html from
    # either, so only the type the PUT sends can make the object HTML
    page = f"{run}/review/page"
    commit_page(storage, page, b"old queue")
    new = b"review queue " + b"x" * 300_000
    commit_page(storage, page, new)

    assert storage.read(page) == new
    bucket, key = parse_s3_uri(page)
    head = storage.s3.client.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == HTML_TYPE
    assert storage.list(run) == [page]
