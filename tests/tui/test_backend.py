"""The inspector's backend without an agent: replays are sent from the inspector and stored."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.capture.model import Headers
from devtunnel.capture.store import Store
from devtunnel.tui.backend import Backend
from tests.kit.exchanges import make_exchange
from tests.kit.servers import Reply, http_server


@pytest.fixture
def target() -> Iterator[str]:
    with http_server(lambda request: Reply(200, body=b"ok")) as server:
        yield server.url


async def test_a_replay_without_an_agent_is_stored_under_the_configured_retention(tmp_path: Path, target: str) -> None:
    db = tmp_path / "captures.db"
    store = Store(db)
    originals = [
        make_exchange("GET", f"/{i}", [("Host", "t.localhost")], tunnel="t", started_at=1.0, target_url=target)
        for i in range(3)
    ]
    store.put_many(originals)
    store.close()
    backend = Backend(db, max_exchanges=3)
    try:
        new = await backend.replay(originals[-1])
    finally:
        await backend.aclose()
    assert new.replay_of == originals[-1].id and new.status == 200
    store = Store(db, readonly=True)
    try:
        assert store.ids() == [originals[1].id, originals[2].id, new.id]  # the oldest made room
    finally:
        store.close()


async def test_an_edit_with_a_full_header_list_is_sent_from_here_without_an_agent(tmp_path: Path, target: str) -> None:
    from devtunnel.capture.edit import Edit

    db = tmp_path / "captures.db"
    original = make_exchange("GET", b"/", [("Host", "t.localhost"), ("X-Gone", "1")], tunnel="t", started_at=1.0,
                             target_url=target)
    store = Store(db)
    store.put(original)
    store.close()
    backend = Backend(db)
    try:
        # The screen's form: header rows as raw byte pairs (the case that failed as JSON).
        new = await backend.replay(original, Edit(headers=Headers([(b"Host", b"t.localhost"), (b"X-New", b"1")])))
    finally:
        await backend.aclose()
    assert new.edited and new.status == 200
    assert new.request.headers.get("x-new") == "1" and "x-gone" not in new.request.headers
    store = Store(db, readonly=True)
    try:
        assert store.get(new.id).edited is True
    finally:
        store.close()


async def test_a_read_asked_for_after_the_backend_closed_is_cancelled_not_left_waiting(tmp_path: Path) -> None:
    backend = Backend(tmp_path / "none.db")
    assert await backend.ids() == []
    await backend.aclose()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(backend.ids(), timeout=5)
