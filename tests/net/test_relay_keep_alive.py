"""The keep-alive timeout of the relay's HTTP protocol (``HeadLimitedHttpProtocol``): one timer a
connection, armed when a response completes, that closes the connection only once it has been
idle ``timeout_keep_alive`` seconds since its last response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from devtunnel.relay.asgi import plain
from devtunnel.relay.http import HeadLimitedHttpProtocol
from devtunnel.relay.http_direct import write_messages

KEEP_ALIVE = 1.0
"""Long enough that a test's sleep before its next request (at most 0.3 of it) ends well before
the relay's timer, on a loaded machine too: both timers share the test's event loop, and one
that falls behind fires the relay's close before the test's task runs again."""
REQUEST = b"GET /%s HTTP/1.1\r\nHost: h\r\n\r\n"


def _direct(protocol: Any, cycle: Any) -> bool:
    """The direct path for /fast: answered at once, from the callback."""
    if cycle.scope["path"] != "/fast":
        return False
    write_messages(cycle, plain(200, "fast"))
    return True


async def _app(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI path: /slow answers after longer than the keep-alive timeout."""
    await receive()
    await asyncio.sleep(KEEP_ALIVE * 1.6)
    for message in plain(200, "slow"):
        await send(message)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    cls = HeadLimitedHttpProtocol.configured(64 * 1024, 10.0, direct=_direct)
    config = uvicorn.Config(_app, http=cls, lifespan="off", timeout_keep_alive=KEEP_ALIVE, log_level="critical", log_config=None)
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: cls(config=config, server_state=state, app_state={}), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for connection in list(state.connections):
            connection.transport.abort()
        await server.wait_closed()


async def _response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return await asyncio.wait_for(reader.readexactly(length), 10)


async def _closed_after(reader: asyncio.StreamReader, since: float) -> float:
    """Seconds from ``since`` until the relay closes the connection (within a deadline).

    ``since`` is taken before the last request is written: the relay arms its timer when it
    answers, which is after that, however late the answer is read here (on a loaded machine,
    tens of milliseconds later)."""
    assert await asyncio.wait_for(reader.read(1), 10) == b"", "nothing more is sent on an idle connection"
    return asyncio.get_running_loop().time() - since


async def test_an_idle_connection_closes_after_the_keep_alive_timeout(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        sent = asyncio.get_running_loop().time()
        writer.write(REQUEST % b"fast")
        assert await _response(reader) == b"fast"
        idle = await _closed_after(reader, sent)
        assert KEEP_ALIVE * 0.9 <= idle < KEEP_ALIVE + 2
    finally:
        writer.close()


async def test_the_timeout_counts_from_the_last_response_not_the_first(port: int) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(REQUEST % b"fast")
        assert await _response(reader) == b"fast"
        await asyncio.sleep(KEEP_ALIVE * 0.3)  # idle for a while, then a second request
        sent = loop.time()
        writer.write(REQUEST % b"fast")
        assert await _response(reader) == b"fast"
        # The timer armed by the first response is due now; the connection stays open until
        # KEEP_ALIVE after the second.
        idle = await _closed_after(reader, sent)
        assert KEEP_ALIVE * 0.9 <= idle < KEEP_ALIVE + 2
    finally:
        writer.close()


async def test_a_connection_with_a_request_in_flight_is_not_idle(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(REQUEST % b"fast")
        assert await _response(reader) == b"fast"
        await asyncio.sleep(KEEP_ALIVE * 0.2)
        # Answered after the timer armed by the first response is due: the connection must
        # not be closed under it.
        writer.write(REQUEST % b"slow")
        assert await _response(reader) == b"slow"
        writer.write(REQUEST % b"fast")
        assert await _response(reader) == b"fast"
    finally:
        writer.close()


async def test_blank_lines_after_a_response_do_not_keep_the_connection_open(port: int) -> None:
    """Blank lines begin no request (llhttp skips them): the connection is still idle, and
    closes after the keep-alive timeout however many of them keep coming."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(REQUEST % b"fast")
        assert await _response(reader) == b"fast"

        async def blank_lines() -> None:
            while True:  # until the relay closes the connection (or the deadline below)
                writer.write(b"\r\n")
                await writer.drain()
                await asyncio.sleep(KEEP_ALIVE / 10)

        sending = asyncio.get_running_loop().create_task(blank_lines())
        try:
            assert await asyncio.wait_for(reader.read(1), 10) == b"", "nothing is sent on an idle connection"
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
    finally:
        writer.close()
