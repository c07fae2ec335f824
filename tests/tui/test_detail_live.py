"""The detail of an exchange in flight is read again when a change notice names it, never on a timer.

The inspector runs its real agent: the notices are the agent's ``/api/events``, as in
``devtunnel http``. Every full read of an exchange is counted by a Backend subclass; the tests
wait on conditions (tunnel polls of the app, rows on the table), and bound the reads counted
meanwhile, never the time.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from textual.widgets import TabbedContent
from websockets.asyncio.client import connect as ws_connect

from devtunnel.capture.model import Exchange
from devtunnel.capture.rows import Row
from devtunnel.capture.store import Store
from devtunnel.errors import StoreError
from devtunnel.tui.app import InspectorApp
from devtunnel.tui.backend import Backend, TunnelView
from devtunnel.tui.screens.detail import DetailScreen
from devtunnel.tui.screens.lines import LinesView
from devtunnel.tui.supervisor import agent_command
from devtunnel.tui.widgets import RequestTable, TunnelsPanel
from tests.helpers import async_wait_for
from tests.kit.servers import Received, Reply, http_server
from tests.net.tunnel_fixtures import local_websocket
from tests.tui.app_fixtures import agent_serving, fill, fixed_id, make_exchange, utc

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


class CountingBackend(Backend):
    """Counts the full reads of each exchange, the live row reads and the app's tunnel polls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gets: Counter[str] = Counter()
        self.getting = 0
        """Full reads under way."""
        self.changed_reads = 0
        self.polls = 0

    async def get(self, exchange_id: str) -> Exchange:
        self.gets[exchange_id] += 1
        self.getting += 1
        try:
            return await super().get(exchange_id)
        finally:
            self.getting -= 1

    async def changed_rows(self, ids: Any, filter: object = None) -> tuple[list[Row], int | None]:
        result = await super().changed_rows(ids, filter)
        self.changed_reads += 1
        return result

    async def tunnels(self) -> list[TunnelView]:
        try:
            return await super().tunnels()
        finally:
            self.polls += 1


def _inspector(db: Path, tmp_path: Path) -> tuple[InspectorApp, CountingBackend]:
    backend = CountingBackend(db)
    app = InspectorApp(backend, agent_argv=agent_command("agent", "--api-port", "0", "--db", str(db)),
                       agent_log=tmp_path / "agent.log", history_path=tmp_path / "filter_history")
    return app, backend


async def _get(public_url: str, path: str) -> int:
    """GET through the tunnel: to the relay's loopback port, with the tunnel's Host."""
    url = urlsplit(public_url)
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(f"http://127.0.0.1:{url.port}{path}", headers={"host": url.netloc})
    return response.status_code


async def _detail(app: InspectorApp, backend: CountingBackend, pilot: Any) -> DetailScreen:
    """Open the detail of the table's current row; returns it once its first reads are done."""
    await pilot.press("enter")
    await async_wait_for(lambda: isinstance(app.screen, DetailScreen), what="the detail")
    screen = app.screen
    assert isinstance(screen, DetailScreen)
    await pilot.press("2")  # drawn: mounted, and listening
    await pilot.pause()
    await async_wait_for(lambda: not backend.getting, what="the detail's reads done")
    return screen


async def test_a_request_in_flight_is_read_again_only_when_the_agent_says_it_changed(tmp_path: Path) -> None:
    gate = threading.Event()

    def answer(request: Received) -> Reply:
        if request.path == "/slow":
            gate.wait(60)
            return Reply(201, body=b"at last\n")
        return Reply(200, body=b"quick\n")

    db = tmp_path / "captures.db"
    app, backend = _inspector(db, tmp_path)
    with http_server(answer) as service:
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                await agent_serving(app)
                panel = app.query_one(TunnelsPanel)
                table = app.query_one(RequestTable)
                await backend.start_tunnel(str(service.port), "shop")
                await async_wait_for(lambda: panel.tunnels.get("shop") and panel.tunnels["shop"].state == "online",
                                     timeout=20, what="the tunnel online")
                public_url = panel.tunnels["shop"].public_url

                # The agent records the request while it waits on the service (its live snapshot).
                slow = asyncio.create_task(_get(public_url, "/slow"))
                await async_wait_for(lambda: len(table.ids) == 1 and table.cached_row(table.ids[0]), timeout=20,
                                     what="the request in flight on the table")
                slow_id = table.ids[0]
                screen = await _detail(app, backend, pilot)
                assert screen.exchange.response is None
                reads = backend.gets[slow_id]

                # Other requests come and go (the agent announces each), and the app polls its
                # tunnels twice, seconds apart: nothing happened to this one, so it is not read.
                for n in range(3):
                    assert await _get(public_url, f"/other/{n}") == 200
                # (Counted on the table: it reads their rows only once it is in sight again.)
                await async_wait_for(lambda: table.total == 4, what="the other requests on the table")
                polls = backend.polls
                await async_wait_for(lambda: backend.polls >= polls + 2, timeout=20, what="two tunnel polls")
                assert backend.gets[slow_id] == reads
                assert set(backend.gets) == {slow_id}

                # The service answers: the agent announces the end, and the detail shows it.
                gate.set()
                assert await slow == 201
                # The body box's children mount a moment after the headers: wait for what is read.
                await async_wait_for(lambda: screen.query("#response-body"), what="the response's body shown")
                assert screen.exchange.status == 201 and screen.exchange.complete
                assert screen.query_one("#response-body", LinesView).lines.line(0).plain == "at last"
                assert backend.gets[slow_id] <= reads + 2
                await pilot.press("escape")
                await pilot.press("q")
                await async_wait_for(lambda: not app.is_running, what="the app to quit")
        finally:
            gate.set()


def _record(db: Path, exchange: Exchange) -> None:
    store = Store(db)
    try:
        store.put(exchange)
    finally:
        store.close()


async def test_notices_read_the_exchange_in_flight_a_bounded_number_of_times_and_none_once_closed(
        tmp_path: Path) -> None:
    stream, other = fixed_id(0), fixed_id(1)
    db = fill(tmp_path / "captures.db", [make_exchange(0, target="/events", status=None, duration=None),
                                         make_exchange(1, target="/done")])
    app, backend = _inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await agent_serving(app)
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: len(table.ids) == 2 and table.cached_row(table.ids[0]), what="the rows")
        await pilot.press("up")
        assert table.current_id == stream
        screen = await _detail(app, backend, pilot)
        reads = backend.gets[stream]

        # Notices about other exchanges, and two tunnel polls of the app seconds apart: the
        # table reads them, the detail reads nothing.
        applied, polls = backend.changed_reads, backend.polls
        app.live.changed([other])
        await async_wait_for(lambda: backend.polls > polls, timeout=20, what="a tunnel poll")
        app.live.changed([fixed_id(7), other])
        await async_wait_for(lambda: backend.polls > polls + 1, timeout=20, what="another tunnel poll")
        await async_wait_for(lambda: backend.changed_reads > applied and not app.live._pending,
                             what="the table to apply the notices")
        assert backend.gets[stream] == reads

        # A burst about it: one read, and one more for what came during it, however many came.
        for _ in range(50):
            app.live.changed([other, stream])
        await async_wait_for(lambda: backend.gets[stream] > reads and not backend.getting, what="the reads")
        assert backend.gets[stream] - reads <= 2
        assert screen.exchange.response is None

        # The agent lost its events feed and came back (a resync): it may have missed the end.
        reads = backend.gets[stream]
        _record(db, make_exchange(0, target="/events", status=200))
        app.live.resync()
        await async_wait_for(lambda: screen.query("#response-headers"), what="the response shown")
        assert backend.gets[stream] == reads + 1
        assert "200" in str(screen.query_one("#detail-title").render())

        # Ended: the detail listens no more.
        reads = backend.gets[stream]
        app.live.changed([stream])
        await async_wait_for(lambda: not app.live._pending and not app.live._applying, what="the table")
        await pilot.pause()
        assert backend.gets[stream] == reads


async def test_a_closed_detail_of_a_request_in_flight_reads_it_no_more(tmp_path: Path) -> None:
    stream = fixed_id(0)
    db = fill(tmp_path / "captures.db", [make_exchange(0, target="/events", status=None, duration=None)])
    app, backend = _inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await agent_serving(app)
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: table.ids and table.cached_row(table.ids[0]), what="the row")
        await _detail(app, backend, pilot)
        reads = backend.gets[stream]
        app.live.changed([stream])
        await async_wait_for(lambda: backend.gets[stream] == reads + 1 and not backend.getting,
                             what="the read it asks for")

        await pilot.press("escape")
        await async_wait_for(lambda: app.screen is app.screen_stack[0], what="the table again")
        applied = backend.changed_reads
        app.live.changed([stream])
        await async_wait_for(lambda: backend.changed_reads > applied and not app.live._pending,
                             what="the table to apply the notice")
        assert backend.gets[stream] == reads + 1


class FailingOnce(CountingBackend):
    """A store locked for the first read the detail makes after it opened."""

    fail_next = False

    async def get(self, exchange_id: str) -> Exchange:
        if self.fail_next:
            self.fail_next = False
            self.gets[exchange_id] += 1
            raise StoreError("database is locked")
        return await super().get(exchange_id)


async def test_a_read_that_failed_is_tried_again_without_waiting_for_another_notice(tmp_path: Path) -> None:
    db = fill(tmp_path / "captures.db", [make_exchange(0, target="/events", status=None, duration=None)])
    backend = FailingOnce(db)
    app = InspectorApp(backend, agent_argv=agent_command("agent", "--api-port", "0", "--db", str(db)),
                       agent_log=tmp_path / "agent.log", history_path=tmp_path / "filter_history")
    async with app.run_test(size=(100, 30)) as pilot:
        await agent_serving(app)
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: table.ids and table.cached_row(table.ids[0]), what="the row")
        screen = await _detail(app, backend, pilot)
        _record(db, make_exchange(0, target="/events", status=200))
        backend.fail_next = True
        app.live.changed([fixed_id(0)])
        await async_wait_for(lambda: screen.query("#response-headers"), what="the response shown")


async def test_the_messages_of_a_websocket_open_in_the_detail_are_shown_once_it_ends(tmp_path: Path) -> None:
    db = tmp_path / "captures.db"
    app, backend = _inspector(db, tmp_path)
    with local_websocket() as (port, _):
        async with app.run_test(size=(100, 30)) as pilot:
            await agent_serving(app)
            panel = app.query_one(TunnelsPanel)
            table = app.query_one(RequestTable)
            await backend.start_tunnel(str(port), "chat")
            await async_wait_for(lambda: panel.tunnels.get("chat") and panel.tunnels["chat"].state == "online",
                                 timeout=20, what="the tunnel online")
            url = urlsplit(panel.tunnels["chat"].public_url)
            async with ws_connect(f"ws://{url.netloc}/chat", host="127.0.0.1", port=url.port, proxy=None) as ws:
                await ws.send("one")
                assert await ws.recv() == "one"
                await async_wait_for(lambda: len(table.ids) == 1 and table.cached_row(table.ids[0]), timeout=20,
                                     what="the WebSocket in flight on the table")
                screen = await _detail(app, backend, pilot)
                assert not screen.exchange.complete
                for word in ("two", "three"):
                    await ws.send(word)
                    assert await ws.recv() == word
            # The end is redrawn in steps (the response, then the messages, then the tab's label, last).
            tabs = screen.query_one(TabbedContent)
            await async_wait_for(lambda: screen.exchange.complete and str(tabs.get_tab("messages").label) == "Messages (6)",
                                 timeout=20, what="the end shown")
            await pilot.press("4")
            await pilot.pause()
            messages = screen.query_one("#ws-messages", LinesView)
            assert len(messages.lines) == 6  # (the 2 it had when it opened, before)
            await pilot.press("escape")
            await pilot.press("q")
            await async_wait_for(lambda: not app.is_running, what="the app to quit")
