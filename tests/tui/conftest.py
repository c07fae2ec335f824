"""Fixtures shared by the inspector tests that run a real agent."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest


class _Hello(http.server.BaseHTTPRequestHandler):
    """The local service behind the tunnel: 200 everywhere, 418 at /teapot."""

    def do_GET(self) -> None:
        body = b"hello from the local service\n"
        self.send_response(200 if self.path != "/teapot" else 418)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def service() -> Iterator[int]:
    """The port of a local HTTP service on 127.0.0.1."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
