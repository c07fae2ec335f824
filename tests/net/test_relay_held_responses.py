"""The relay's memory for responses its public clients do not read: an agent may send each
stream's window (4 MiB) before the client reads a byte, so what the relay holds is bounded per
agent (``agent_responses``) and for all agents (``relay_buffer``), past which the stream holding
the most is reset and its client cut. Real relay on loopback, a scripted agent, raw public
sockets that stop reading; the relay's own counter (``Relay.held_responses``) is what is measured.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve

from devtunnel.protocol.events import StreamReset
from devtunnel.relay.server import Relay
from tests.helpers import async_wait_for
from tests.net._relay_agent import AgentRequest, connect_agent, echo, running_relay
from tests.net.tunnel_fixtures import LoopThread, relay_and_agent

MiB = 1 << 20
KiB = 1 << 10
FRAME = 256 << 10


def serving(body: bytes, resets: list[str]) -> Callable[[AgentRequest], object]:
    """A handler answering every request with ``body`` as fast as the window allows; a stream
    the relay resets ends it, its reason kept in ``resets``."""

    async def handler(request: AgentRequest) -> None:
        request.respond(200, [(b"Content-Length", str(len(body)).encode())])
        conn = request.agent.conn
        sent = 0
        while sent < len(body):
            window = min(conn.send_window(request.id), len(body) - sent, FRAME)
            if window:
                conn.send_data(request.id, body[sent:sent + window], end_stream=sent + window == len(body))
                sent += window
                request.agent.flush()
                await asyncio.sleep(0)
                continue
            while not request.inbox.empty():
                event = request.inbox.get_nowait()
                if isinstance(event, StreamReset):
                    resets.append(event.reason)
                    return
            request.window.clear()
            await request.window.wait()

    return handler


async def stalled_get(port: int, name: str) -> socket.socket:
    """GET / from tunnel ``name`` on a socket with a small receive buffer that is never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, f"GET / HTTP/1.1\r\nHost: {name}.localhost\r\n\r\n".encode())
    return sock


class Peak:
    """The most ``relay.held_responses`` showed, looked at between every two callbacks of the
    event loop (each agent message is handled in one) from creation to ``stop()``."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.value = 0
        self._handle = asyncio.get_running_loop().call_soon(self._sample)

    def _sample(self) -> None:
        self.value = max(self.value, self.relay.held_responses)
        self._handle = asyncio.get_running_loop().call_soon(self._sample)

    def stop(self) -> int:
        self._handle.cancel()
        return self.value


async def get_text(port: int, name: str) -> tuple[int, str]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        r = await client.get(f"http://127.0.0.1:{port}/ok", headers={"Host": f"{name}.localhost"})
    return r.status_code, r.text


async def test_an_agent_flooding_clients_that_do_not_read_holds_at_most_its_ceiling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ceiling = 2 * MiB
    resets: list[str] = []
    async with running_relay(agent_responses=ceiling) as relay:
        flood = await connect_agent(relay, "flood", handler=serving(b"x" * (32 * MiB), resets))
        other = await connect_agent(relay, "other", handler=echo)
        peak = Peak(relay)
        socks = [await stalled_get(relay.port, "flood") for _ in range(6)]
        try:
            with caplog.at_level(logging.WARNING, logger="devtunnel.relay"):
                await async_wait_for(lambda: len(resets) == 6, what="the relay to reset every stream")
            assert ceiling // 2 < peak.stop() <= ceiling
            assert "of responses public clients have not read (at most 2 MiB for this agent)" in resets[0]
            assert any("client had not read" in r.getMessage() for r in caplog.records)
            # The other tunnel is served all along.
            assert (await get_text(relay.port, "other"))[0] == 200
            assert relay.held_responses <= ceiling
        finally:
            for sock in socks:
                sock.close()
        await async_wait_for(lambda: relay.held_responses == 0, what="the held responses to be let go")
        await flood.close()
        await other.close()


async def test_agents_together_hold_at_most_the_relay_ceiling_and_another_tunnel_is_served() -> None:
    # Under what one stream holds once its client stopped reading (its window, 4 MiB, less what
    # the kernel and the transport took: 1-3 MiB, as tcp_wmem lets the relay's send buffer
    # grow), so every stream is shed however the four fill up, not only while others hold
    # more beside it.
    total = 512 * KiB
    resets: list[str] = []
    async with running_relay(agent_responses=64 * MiB, relay_buffer=total) as relay:
        agents = [await connect_agent(relay, name, handler=serving(b"y" * (32 * MiB), resets)) for name in ("a", "b")]
        other = await connect_agent(relay, "other", handler=echo)
        peak = Peak(relay)
        socks = [await stalled_get(relay.port, name) for name in ("a", "b", "a", "b")]
        try:
            await async_wait_for(lambda: len(resets) == 4, what="the relay to reset every stream")
            assert total // 2 < peak.stop() <= total
            assert "(at most 512 KiB for all agents)" in resets[0]
            status, text = await get_text(relay.port, "other")
            assert status == 200 and text.startswith("GET /ok")
        finally:
            for sock in socks:
                sock.close()
        await async_wait_for(lambda: relay.held_responses == 0, what="the held responses to be let go")
        for agent in [*agents, other]:
            await agent.close()


async def test_a_closed_agent_s_unread_responses_still_count_and_are_shed_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    resets: list[str] = []
    async with running_relay(agent_responses=5 * MiB, relay_buffer=64 * MiB, log_interval=0.001) as relay:
        first = await connect_agent(relay, "gone", handler=serving(b"z" * (32 * MiB), resets))
        socks = [await stalled_get(relay.port, "gone")]  # holds at most its window (4 MiB)
        again = None
        try:
            await async_wait_for(lambda: relay.held_responses > 2 * MiB, what="the relay to hold responses")
            first.abort()
            await async_wait_for(lambda: relay.tunnels == [], what="the agent to be gone")
            held = relay.held_responses
            assert held > 2 * MiB  # its clients may still read them
            # The relay-wide ceiling just above what the closed agent holds (how much its client's
            # kernel buffers took first varies): another agent's stream pushes the total over
            # while holding less than the closed one, whose stream goes first.
            ceiling = held + MiB // 2
            relay._budget.total_responses = ceiling
            peak = Peak(relay)
            with caplog.at_level(logging.WARNING, logger="devtunnel.relay"):
                again = await connect_agent(relay, "again", handler=serving(b"w" * (32 * MiB), resets))
                socks.append(await stalled_get(relay.port, "again"))
                await async_wait_for(
                    lambda: any(r.getMessage().startswith("tunnel gone: reset stream") for r in caplog.records),
                    what="the closed agent's stream to be shed",
                )
            assert peak.stop() <= ceiling
            sheds = [r.getMessage() for r in caplog.records if " reset stream " in r.getMessage()]
            assert sheds[0].startswith("tunnel gone: reset stream"), sheds  # the closed one first
        finally:
            for sock in socks:
                sock.close()
        await async_wait_for(lambda: relay.held_responses == 0, what="the held responses to be let go")
        await again.close()


async def test_downloads_to_slow_clients_under_the_ceiling_arrive_whole() -> None:
    size = 12 * MiB
    body = os.urandom(size)
    resets: list[str] = []
    async with running_relay(agent_responses=16 * MiB, relay_buffer=16 * MiB) as relay:
        agent = await connect_agent(relay, "dl", handler=serving(body, resets))
        socks = [await stalled_get(relay.port, "dl") for _ in range(3)]
        loop = asyncio.get_running_loop()

        async def read_all(sock: socket.socket) -> bytes:
            data = bytearray()
            while True:
                part = await loop.sock_recv(sock, 1 << 20)
                if not part:
                    return bytes(data)
                data += part
                end = data.find(b"\r\n\r\n")  # (a head is short: found in the first reads)
                if end >= 0 and len(data) - end - 4 >= size:
                    return bytes(data[end + 4:])

        try:
            # The clients read nothing until the relay holds a good part of each stream's window
            # (4 MiB, less what the kernel's buffers and the transport took: 1-3 MiB a stream,
            # as tcp_wmem lets the relay's send buffer grow): under the ceiling.
            await async_wait_for(lambda: relay.held_responses >= 3 * MiB, timeout=20, what="the relay to hold responses")
            bodies = await asyncio.wait_for(asyncio.gather(*(read_all(s) for s in socks)), 30)
            assert [hashlib.sha256(b).hexdigest() for b in bodies] == [hashlib.sha256(body).hexdigest()] * 3
            assert resets == []
        finally:
            for sock in socks:
                sock.close()
        await async_wait_for(lambda: relay.held_responses == 0, what="the held responses to be let go")
        await agent.close()


@contextmanager
def pushing_websocket(size: int = 64 << 10) -> Iterator[int]:
    """A local WebSocket service that sends binary messages of ``size`` bytes to each client as
    fast as it can until the client is gone (a live feed); yields its port."""
    thread = LoopThread()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    async def push(ws: ServerConnection) -> None:
        message = bytes(size)
        try:
            while True:
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass

    async def start() -> Any:
        return await serve(push, sock=sock, compression=None, max_size=None)

    server = thread.call(start())
    try:
        yield sock.getsockname()[1]
    finally:
        server.close()
        thread.close()


async def stalled_websocket(port: int, host: str) -> ClientConnection:
    """A public WebSocket to ``host`` through the relay on ``port``, on a socket with a small
    receive buffer, that reads nothing until its transport's reading is resumed."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    ws = await websockets.connect(f"ws://{host}/feed", sock=sock, compression=None, max_size=None, ping_interval=None)
    ws.transport.pause_reading()
    return ws


async def test_a_websocket_whose_client_does_not_read_is_closed_with_1013_when_shed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # The relay sheds the stream holding the most past the agent's ceiling; a public WebSocket
    # on it was left open (the relay held no handle on it) until its client left or a ping
    # failed. It is closed with 1013 now, and its client sees why once it reads.
    with pushing_websocket() as port, caplog.at_level(logging.WARNING, logger="devtunnel.relay"):
        async with relay_and_agent(tmp_path, agent_responses=MiB // 4) as harness:
            await harness.start(str(port), name="feed")
            ws = await stalled_websocket(harness.relay.port, harness.host("feed"))
            try:
                await async_wait_for(
                    lambda: any("client had not read" in r.getMessage() for r in caplog.records),
                    timeout=20, what="the relay to shed the stream",
                )
                ws.transport.resume_reading()
                async with asyncio.timeout(5):
                    with pytest.raises(websockets.ConnectionClosed):
                        while True:
                            await ws.recv()
                assert ws.close_code == 1013
                assert ws.close_reason == "the relay holds too much this client has not read; try again later"
            finally:
                await ws.close()
            await async_wait_for(lambda: harness.relay.held_responses == 0, what="the held responses to be let go")


async def test_a_shed_websocket_whose_client_never_reads_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    with pushing_websocket() as port, caplog.at_level(logging.WARNING, logger="devtunnel.relay"):
        async with relay_and_agent(tmp_path, agent_responses=MiB // 4) as harness:
            await harness.start(str(port), name="feed")
            before = harness.relay.connections
            ws = await stalled_websocket(harness.relay.port, harness.host("feed"))
            try:
                await async_wait_for(lambda: harness.relay.connections == before + 1, what="the WebSocket to open")
                await async_wait_for(
                    lambda: any("client had not read" in r.getMessage() for r in caplog.records),
                    timeout=20, what="the relay to shed the stream",
                )
                # Its close frame waits behind what the client does not read: the connection is
                # dropped once the client had a moment (CLOSE_GRACE) to read it.
                await async_wait_for(
                    lambda: harness.relay.connections == before, timeout=5, what="the relay to drop the client",
                )
                assert harness.relay.held_responses == 0
            finally:
                ws.transport.abort()


def never_ending(resets: dict[tuple[str, int], str], sent: dict[tuple[str, int], int], limit: int = 32 * MiB,
                 ) -> Callable[[AgentRequest], object]:
    """A hostile agent's handler: accept each WebSocket, then send it fragments of one binary
    message that never ends (up to ``limit`` bytes), as fast as the relay grants credit; the
    reason of a stream the relay resets is kept in ``resets``, the bytes sent in ``sent``."""

    async def handler(request: AgentRequest) -> None:
        agent = request.agent
        key = (agent.name or "", request.id)
        request.respond(101, [])
        conn = agent.conn
        sent[key] = 0
        while True:
            while not request.inbox.empty():
                event = request.inbox.get_nowait()
                if isinstance(event, StreamReset):
                    resets[key] = event.reason
                    return
            if conn.send_window(request.id) >= FRAME and sent[key] < limit:
                conn.send_ws_message(request.id, bytes(FRAME), text=False, fin=False)  # never the last fragment
                sent[key] += FRAME
                agent.flush()
                await asyncio.sleep(0)
                continue
            request.window.clear()
            await request.window.wait()

    return handler


@pytest.mark.parametrize("ceiling", ["agent_responses", "relay_buffer"])
async def test_websocket_fragments_gathered_for_a_client_count_toward_the_ceilings(
    ceiling: str, caplog: pytest.LogCaptureFixture,
) -> None:
    # A message's fragments are credited to the agent as they arrive (the client is sent whole
    # messages) and were no longer counted: an agent sending fragments that never end on many
    # WebSockets made the relay hold without bound. They count now until their message goes,
    # and the stream gathering the most is shed past either ceiling, its client closed with 1013.
    limit = 4 * MiB
    resets: dict[tuple[str, int], str] = {}
    sent: dict[tuple[str, int], int] = {}
    settings = {"agent_responses": 64 * MiB, "relay_buffer": 64 * MiB, ceiling: limit}
    async with running_relay(log_interval=0.001, **settings) as relay:
        hostile = [
            await connect_agent(relay, name, handler=never_ending(resets, sent)) for name in ("hostile", "evil")
        ]
        other = await connect_agent(relay, "other", handler=echo)
        peak = Peak(relay)
        names = ["hostile", "evil"] * 3 if ceiling == "relay_buffer" else ["hostile"] * 6
        clients = [
            await websockets.connect(f"ws://{name}.localhost:{relay.port}/feed", host="127.0.0.1", max_size=None)
            for name in names
        ]
        try:
            with caplog.at_level(logging.WARNING, logger="devtunnel.relay"):
                await async_wait_for(lambda: len(resets) == len(clients), timeout=30, what="every stream to be shed")
            assert peak.stop() <= limit + FRAME
            assert sum(sent.values()) > 2 * limit  # what the relay would have held
            whose = "for all agents" if ceiling == "relay_buffer" else "for this agent"
            assert all(f"(at most 4 MiB {whose})" in reason for reason in resets.values()), resets
            assert any(" reset stream " in r.getMessage() for r in caplog.records)
            for ws in clients:
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.close_code == 1013
            # The other tunnel is served all along.
            status, text = await get_text(relay.port, "other")
            assert status == 200 and text.startswith("GET /ok")
        finally:
            for ws in clients:
                await ws.close()
        await async_wait_for(lambda: relay.held_responses == 0, what="the held fragments to be let go")
        for agent in [*hostile, other]:
            await agent.close()
