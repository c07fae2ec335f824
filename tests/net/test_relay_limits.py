"""The relay's memory under a rogue agent: before login (big messages, pings it never reads)
and after (huge windows, never reading public uploads). Real relay, raw sockets on loopback;
the relay's own counter of bytes held for agents (``Relay.buffered``) is what is measured."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable

import httpx

from devtunnel.relay.server import Relay
from devtunnel.values.relay_url import CONNECT_PATH
from devtunnel.protocol import frames as f
from devtunnel.protocol.events import DataReceived
from tests.helpers import async_wait_for
from tests.net._relay_agent import (
    AgentRequest,
    ScriptedAgent,
    connect_agent,
    running_relay,
)

MiB = 1 << 20


# -- raw WebSocket client pieces -----------------------------------------------------------------
async def ws_handshake(port: int, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a WebSocket to the relay's agent endpoint by hand; returns the stream after the 101."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {CONNECT_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def client_frame_head(opcode: int, length: int, fin: bool = True) -> bytes:
    """A masked client frame header (mask of zeros: the payload goes as is) for ``length`` bytes."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return struct.pack("!BB", first, 0x80 | length) + b"\0\0\0\0"
    if length < 1 << 16:
        return struct.pack("!BBH", first, 0x80 | 126, length) + b"\0\0\0\0"
    return struct.pack("!BBQ", first, 0x80 | 127, length) + b"\0\0\0\0"


async def read_close_code(reader: asyncio.StreamReader) -> int:
    """Read server frames until a close frame; return its code."""
    while True:
        first, second = await asyncio.wait_for(reader.readexactly(2), 10)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        payload = await reader.readexactly(length)
        if first & 0x0F == 0x8:
            return int(struct.unpack("!H", payload[:2])[0])


# -- before login ----------------------------------------------------------------------------------
async def test_a_big_message_before_login_is_refused_with_1009_and_the_connection_freed() -> None:
    async with running_relay(head_timeout=60) as relay:
        for _ in range(3):  # the unfinished 60 MB message, three times over
            reader, writer = await ws_handshake(relay.port)
            # Only the start of it: bytes the relay never reads would turn its close into a reset.
            writer.write(client_frame_head(0x2, 60 * MiB) + b"\0" * 1024)
            assert await read_close_code(reader) == 1009
            assert await asyncio.wait_for(reader.read(), 10) == b""  # and the relay closed the connection
            writer.close()
        await async_wait_for(lambda: relay.connections == 0, what="the connections to be freed")
        # A HELLO (far below the limit) still gets in.
        agent = await connect_agent(relay, "after")
        await agent.close()


async def test_a_peer_that_never_says_hello_is_let_go_at_the_login_deadline() -> None:
    async with running_relay(head_timeout=0.3) as relay:
        reader, writer = await ws_handshake(relay.port)
        assert await read_close_code(reader) == 1000
        # Closed by the relay without waiting for a close echo (uvicorn would wait 10 s for one).
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await async_wait_for(lambda: relay.connections == 0, what="the connection to be freed")


async def test_a_message_in_many_fragments_counts_whole_before_login() -> None:
    async with running_relay(head_timeout=60) as relay:
        reader, writer = await ws_handshake(relay.port)
        piece = 16 << 10  # four fragments fill the 64 KiB allowed; the fifth one's header is refused
        data = client_frame_head(0x2, piece, fin=False) + b"\0" * piece
        data += (client_frame_head(0x0, piece, fin=False) + b"\0" * piece) * 3
        writer.write(data + client_frame_head(0x0, piece, fin=False))
        assert await read_close_code(reader) == 1009
        writer.close()
        await async_wait_for(lambda: relay.connections == 0, what="the connection to be freed")


async def test_a_peer_that_pings_before_login_without_reading_the_pongs_is_dropped() -> None:
    # The HELLO deadline (60 s) is not what ends it: not reading is.
    async with running_relay(head_timeout=60) as relay:
        _, writer = await ws_handshake(relay.port, rcvbuf=4096)
        ping = client_frame_head(0x9, 125) + b"p" * 125
        batch = ping * 1000
        deadline = time.monotonic() + 30
        sent = 0
        try:
            while relay.connections and sent < 400_000 and time.monotonic() < deadline:
                writer.write(batch)
                await asyncio.wait_for(writer.drain(), 10)
                sent += 1000
        except (TimeoutError, ConnectionError):
            pass
        await async_wait_for(lambda: relay.connections == 0, what="the peer to be dropped")
        writer.transport.abort()


# -- after login -------------------------------------------------------------------------------------
async def upload(port: int, name: str, size: int) -> None:
    """POST ``size`` bytes to tunnel ``name`` over a raw socket, as fast as the relay takes them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"POST /upload HTTP/1.1\r\nHost: {name}.localhost\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        chunk = b"u" * (256 << 10)
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        await reader.read()
    except ConnectionError:
        pass
    finally:
        writer.transport.abort()


async def rogue(relay: Relay, name: str) -> ScriptedAgent:
    """An agent that grants a 2^31-1 window on every stream and never reads a byte."""
    agent = await connect_agent(relay, name, handler=None, initial_window=f.MAX_WINDOW)
    agent.stop_reading()
    return agent


async def peak_while(relay: Relay, done: Callable[[], bool], what: str) -> int:
    """The most ``relay.buffered`` showed (sampled every few ms) until ``done()``."""
    peak = 0

    def sample() -> bool:
        nonlocal peak
        peak = max(peak, relay.buffered)
        return done()

    await async_wait_for(sample, timeout=30, interval=0.005, what=what)
    return peak


async def run_uploads(uploads: list[Awaitable[None]]) -> list[asyncio.Task[None]]:
    return [asyncio.ensure_future(u) for u in uploads]


async def stop(tasks: list[asyncio.Task[None]], agents: list[ScriptedAgent]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for agent in agents:
        agent.abort()
        await agent.close()


async def test_a_rogue_agent_announcing_a_huge_window_and_never_reading_holds_at_most_its_ceiling() -> None:
    ceiling = 4 * MiB
    async with running_relay(agent_buffer=ceiling, stall_timeout=1.0, ping_interval=60, ping_timeout=60) as relay:
        agent = await rogue(relay, "sink")
        tasks = await run_uploads([upload(relay.port, "sink", 24 * MiB) for _ in range(4)])
        try:
            await async_wait_for(lambda: relay.buffered > ceiling // 2, what="the relay to buffer for the agent")
            peak = await peak_while(relay, lambda: relay.tunnels == [], what="the non-reading agent to be dropped")
            assert peak <= ceiling
            await async_wait_for(lambda: relay.buffered == 0, what="the buffers to be let go")
        finally:
            await stop(tasks, [agent])


async def test_rogue_agents_together_hold_at_most_the_relay_ceiling() -> None:
    total = 5 * MiB
    async with running_relay(
        agent_buffer=4 * MiB, relay_buffer=total, stall_timeout=1.0, ping_interval=60, ping_timeout=60
    ) as relay:
        agents = [await rogue(relay, "one"), await rogue(relay, "two")]
        tasks = await run_uploads([upload(relay.port, name, 24 * MiB) for name in ("one", "two", "one", "two")])
        try:
            await async_wait_for(lambda: relay.buffered > total // 2, what="the relay to buffer for the agents")
            peak = await peak_while(relay, lambda: relay.tunnels == [], what="both agents to be dropped")
            assert peak <= total
        finally:
            await stop(tasks, agents)


async def test_uploads_larger_than_the_ceiling_still_arrive_whole_at_an_agent_that_reads() -> None:
    size = 12 * MiB

    async def digest(request: AgentRequest) -> None:
        h = hashlib.sha256()
        async for chunk in request.chunks():
            h.update(chunk)
        body = h.hexdigest().encode()
        request.respond(200, [(b"Content-Length", str(len(body)).encode())])
        await request.send(body, end=True)

    payload = os.urandom(size)
    async with running_relay(agent_buffer=256 << 10, relay_buffer=512 << 10) as relay:
        agent = await connect_agent(relay, "reads", handler=digest)
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
                responses = await asyncio.gather(*(
                    client.post(f"http://127.0.0.1:{relay.port}/up", content=payload, headers={"Host": "reads.localhost"})
                    for _ in range(3)
                ))
            assert [(r.status_code, r.text) for r in responses] == [(200, hashlib.sha256(payload).hexdigest())] * 3
        finally:
            await agent.close()


async def test_the_relay_uses_no_more_credit_than_its_cap_whatever_window_the_agent_grants() -> None:
    received = 0

    async def hoard(request: AgentRequest) -> None:  # keeps every byte, acknowledges none
        nonlocal received
        if request.event.method == b"GET":
            request.respond(204, end=True)
            return
        while True:
            event = await request.inbox.get()
            if isinstance(event, DataReceived):
                received += len(event.data)

    async with running_relay(max_window=MiB) as relay:
        agent = await connect_agent(relay, "cap", handler=hoard, initial_window=f.MAX_WINDOW)
        task = asyncio.ensure_future(upload(relay.port, "cap", 8 * MiB))
        try:
            await async_wait_for(lambda: received >= MiB, what="the first window's worth")
            # Frames arrive in order: whatever the relay sent for the upload before this GET is in.
            async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
                r = await client.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "cap.localhost"})
            assert r.status_code == 204
            assert received == MiB  # the relay stopped at its cap, not at the agent's 2 GiB
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await agent.close()
