"""What of a webhook URL may be logged, and what is redacted."""

from __future__ import annotations

import logging

import pytest

from rxvision.pipeline.webhook import RedactFilter, url_origin, url_secrets

pytestmark = pytest.mark.unit


def test_url_origin_keeps_scheme_host_and_port_only() -> None:
    assert url_origin("https://hooks.slack.com/services/T0/B0/XYZ") == "https://hooks.slack.com:443"
    assert url_origin("http://user:pw@127.0.0.1:8080/x?k=SECRET") == "http://127.0.0.1:8080"


def test_url_secrets_cover_the_url_its_path_and_query_and_a_password() -> None:
    url = "https://user:pw@hooks.example:8443/services/T0/XYZ?token=SECRET"
    secrets = url_secrets(url)
    assert secrets[0] == url  # longest first: the whole URL is redacted as one
    assert {"/services/T0/XYZ?token=SECRET", "/services/T0/XYZ", "pw"} <= set(secrets)


def test_a_record_showing_a_registered_secret_is_rewritten() -> None:
    redact = RedactFilter()
    redact.add("https://hooks.example/services/T0/XYZ")
    record = logging.LogRecord(
        "urllib3.connectionpool",
        logging.DEBUG,
        __file__,
        1,
        "POST %s HTTP/1.1",
        ("/services/T0/XYZ",),
        None,
    )
    assert redact.filter(record)
    assert record.getMessage() == "POST <redacted> HTTP/1.1"
