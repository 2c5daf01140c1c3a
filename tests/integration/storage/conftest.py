"""A fake S3 endpoint on a free loopback port, for answers the real store never gives."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator

import pytest

Serve = Callable[[type[http.server.BaseHTTPRequestHandler]], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a server answering with a handler class; its URL. Stopped after the test."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handler: type[http.server.BaseHTTPRequestHandler]) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
