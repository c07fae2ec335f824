"""Fixtures shared by the inspector tests that run a real agent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


NEVER_AWAITED = (
    "error:coroutine .* was never awaited:RuntimeWarning",
    # Said from the coroutine's finaliser, the error above reaches pytest as an unraisable exception.
    "error:Exception ignored in. <coroutine object:pytest.PytestUnraisableExceptionWarning",
)
"""A coroutine handed to a worker that never ran it fails the inspector's tests (see test_worker_coroutines)."""


@pytest.fixture(autouse=True)
def _not_the_callers_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The terminal the suite runs in (inside tmux, a desktop session) must not change what the
    inspector says it copied: a test that wants one of these sets it itself."""
    for name in ("TMUX", "TMUX_PANE", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            for spec in NEVER_AWAITED:
                item.add_marker(pytest.mark.filterwarnings(spec))
