"""Fixtures shared by the inspector tests that run a real agent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kit.servers import Received, Reply, http_server


def _hello(request: Received) -> Reply:
    """The local service behind the tunnel: 200 everywhere, 418 at /teapot."""
    return Reply(200 if request.path != "/teapot" else 418, body=b"hello from the local service\n")


@pytest.fixture
def service() -> Iterator[int]:
    """The port of a local HTTP service on 127.0.0.1."""
    with http_server(_hello) as server:
        yield server.port
