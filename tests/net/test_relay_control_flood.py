"""An agent flooding the relay with tiny frames (HTTP/2's ping flood, CVE-2019-9512): one
WebSocket message of hundreds of thousands of PINGs. The relay handles a large message a slice
per turn of its event loop (``agents.RECEIVE_SLICE``), serving other tunnels in between, and
fails a connection whose peer leaves more than ``MAX_UNSENT_REPLIES`` answers unread.

Real relay on loopback, a hostile agent written here (a websockets client speaking the tunnel
protocol), a well-behaved agent beside it. Memory is counted with tracemalloc, never timed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from devtunnel.protocol import frames as f
from devtunnel.protocol.agent_side import AgentConnection
from devtunnel.protocol.connection import MAX_UNSENT_REPLIES, ErrorCode
from devtunnel.protocol.events import GoAway, PongReceived, Welcome
from devtunnel.relay.server import Relay
from tests.helpers import async_wait_for
from tests.net._relay_agent import TOKEN, connect_agent, echo, running_relay

MiB = 1 << 20
PINGS = 200_000
"""PINGs in the hostile message (3.4 MB): twelve times ``MAX_UNSENT_REPLIES``, fifty slices."""
UNREAD_PINGS = 60_000
"""PINGs sent by the agent that reads nothing (1 MB: almost four times ``MAX_UNSENT_REPLIES``);
fewer, as the count of allocations (tracemalloc) slows everything tenfold."""


def ping_flood(count: int) -> bytes:
    """One message of ``count`` PING frames."""
    return b"".join(f.frame(f.PING, 0, 0, b"%08d" % i) for i in range(count))


@contextmanager
def counting() -> Iterator[None]:
    """tracemalloc on, for the block."""
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


@asynccontextmanager
async def hostile_agent(
    port: int, name: str, *, small_buffer: bool = False
) -> AsyncIterator[tuple[ClientConnection, AgentConnection]]:
    """A welcomed agent connection speaking raw frames; with ``small_buffer``, on a socket with
    a small receive buffer (what it does not read stays at the relay, not in the kernel)."""
    sock = socket.socket()
    if small_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/_devtunnel/connect", sock=sock, max_size=None, ping_interval=None
    )
    conn = AgentConnection()
    conn.send_hello(TOKEN, name)
    await ws.send(conn.data_to_send())
    welcome = None
    while welcome is None:
        message = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(message, bytes)
        welcome = next((e for e in conn.receive_data(message) if isinstance(e, Welcome)), None)
    try:
        yield ws, conn
    finally:
        ws.transport.abort()


async def get_ok(client: httpx.AsyncClient, port: int) -> int:
    r = await client.get(f"http://127.0.0.1:{port}/ok", headers={"Host": "good.localhost"})
    return r.status_code


def small_send_buffer(relay: Relay, name: str) -> None:
    """Shrink the send buffer of the relay's socket to agent ``name``: what its agent does not
    read then waits at the relay, where the limits are, and not in the kernel (which would take
    megabytes, growing the buffer up to ``tcp_wmem``)."""
    link = relay._tunnels[name].members[0]
    assert link.socket is not None
    link.socket.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


async def test_an_agent_not_reading_the_pongs_to_its_ping_flood_is_closed_and_holds_little(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flood = ping_flood(UNREAD_PINGS)
    async with running_relay() as relay:
        good = await connect_agent(relay, "good", handler=echo)
        with counting(), caplog.at_level(logging.INFO, logger="devtunnel.relay"):
            async with hostile_agent(relay.port, "flood", small_buffer=True) as (ws, conn), \
                    httpx.AsyncClient(trust_env=False, timeout=20) as client:
                small_send_buffer(relay, "flood")
                ws.transport.pause_reading()  # it reads none of the PONGs
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                await asyncio.wait_for(ws.send(flood), 20)
                await async_wait_for(lambda: "flood" not in relay.tunnels, timeout=20, what="the flooding agent to be dropped")
                rise = tracemalloc.get_traced_memory()[1] - base
                assert await get_ok(client, relay.port) == 200  # the other tunnel is served
                # What it reads now ends with the relay's GOAWAY, saying why.
                ws.transport.resume_reading()
                goaway = None
                for _ in range(10_000):  # bounded: the PONGs it did not read, then the GOAWAY
                    message = await asyncio.wait_for(ws.recv(), 20)
                    assert isinstance(message, bytes)
                    goaway = next((e for e in conn.receive_data(message) if isinstance(e, GoAway)), None)
                    if goaway is not None:
                        break
        lines = [r.getMessage() for r in caplog.records if "too many control frames unanswered" in r.getMessage()]
        assert goaway is not None
        assert goaway.code == ErrorCode.PROTOCOL_ERROR
        assert goaway.reason.startswith("too many control frames unanswered")
        assert f"more than {MAX_UNSENT_REPLIES} wait to be sent" in goaway.reason
        assert len(lines) == 1, lines  # logged once
        # The message (1 MB) is held by the WebSocket layer while it arrives, and joined; beyond
        # it, the PONGs that wait and the events of one slice: 2.4 MB in all. Handled at once,
        # with the events and PONGs of all 60,000 PINGs, it was 10 MB.
        assert rise < 5 * MiB, rise
        await good.close()


async def test_a_message_of_many_pings_is_handled_in_slices_while_another_tunnel_is_served() -> None:
    flood = ping_flood(PINGS)
    async with running_relay() as relay:
        good = await connect_agent(relay, "good", handler=echo)
        served_between: list[int] = []  # answers of the other tunnel between the first and last PONG
        pongs = 0

        async def read_pongs(ws: ClientConnection, conn: AgentConnection) -> None:
            nonlocal pongs
            while pongs < PINGS:
                message = await asyncio.wait_for(ws.recv(), 20)
                assert isinstance(message, bytes)
                pongs += sum(isinstance(e, PongReceived) for e in conn.receive_data(message))

        async def probe(client: httpx.AsyncClient) -> None:
            for _ in range(10_000):  # bounded: the PONGs end long before
                status = await get_ok(client, relay.port)
                assert status == 200
                if 0 < pongs < PINGS:
                    served_between.append(status)
                if pongs == PINGS:
                    return

        async with hostile_agent(relay.port, "flood") as (ws, conn), httpx.AsyncClient(trust_env=False, timeout=20) as client:
            assert await get_ok(client, relay.port) == 200  # (the client's connection, warm)
            reader = asyncio.ensure_future(read_pongs(ws, conn))
            prober = asyncio.ensure_future(probe(client))
            await asyncio.wait_for(ws.send(flood), 20)
            await asyncio.wait_for(reader, 20)
            await asyncio.wait_for(prober, 20)
            # A peer that reads its PONGs is not refused, however many it asks for.
            assert "flood" in relay.tunnels
        # Handled at once, the PONGs went out in one message after every PING was handled:
        # the other tunnel could not be answered in between.
        assert served_between, "no request to the other tunnel was answered while the PINGs were handled"
        await good.close()
