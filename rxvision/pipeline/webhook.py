"""The on-call webhook: a POST with retries, and a URL that is never logged.

A webhook URL is a secret (a Slack URL's path is its token). ``url_origin`` is all of it
that may be logged; ``REDACT``, a filter on urllib3's loggers (which log the request path
at DEBUG and on retries), rewrites any record that shows a registered URL's secret parts.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import requests
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

REDACTED = "<redacted>"
# urllib3 logs the request path at DEBUG (and on retries/redirects): these loggers get
# the redacting filter below
URLLIB3_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
)


def url_origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: all of a webhook URL that may be logged."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return "<unparsable url>"
    return f"{parts.scheme or '?'}://{parts.hostname or '?'}:{port or '?'}"


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that must never be logged: the whole URL, its path and
    query, and a password (longest first, so the whole URL is redacted as one)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return [url]
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    found = {url, tail, parts.path, password or ""} - {"", "/"}
    return sorted(found, key=len, reverse=True)


class RedactFilter(logging.Filter):
    """Rewrites a log record that shows a registered secret (urllib3 logs the request
    path at DEBUG, and a Slack webhook's path is its token)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, url: str) -> None:
        """Redact ``url``'s secret parts from now on."""
        self.secrets.update(url_secrets(url))

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, with every secret replaced by ``<redacted>``."""
        if not self.secrets:
            return True
        message = record.getMessage()
        if not any(s in message for s in self.secrets):
            return True
        for secret in sorted(self.secrets, key=len, reverse=True):
            message = message.replace(secret, REDACTED)
        record.msg, record.args = message, None
        return True


REDACT = RedactFilter()
for _name in URLLIB3_LOGGERS:
    logging.getLogger(_name).addFilter(REDACT)


RETRY_STATUSES = frozenset({408, 429})  # "try again later" 4xx: retried like a 5xx


class WebhookError(Exception):
    """The webhook answered with a server error or asked to try later (retried)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"webhook answered {status}")
        self.status = status


@retry(
    retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout, WebhookError)),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.5, max=4),
    reraise=True,
)
def post_webhook(url: str, body: dict[str, Any], timeout_s: float = 10) -> int:
    """POST the JSON body; retry connection errors, 5xx, 408 and 429; return the status
    code (any other 4xx is permanent: not retried)."""
    resp = requests.post(url, json=body, timeout=timeout_s)
    if resp.status_code >= 500 or resp.status_code in RETRY_STATUSES:
        raise WebhookError(resp.status_code)
    return resp.status_code
