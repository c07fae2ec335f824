"""A hostile relay cannot make the agent hold memory without bound, nor hang it.

A scripted relay (a real websockets server speaking the tunnel protocol with the protocol's own
encoder) welcomes a real ``AgentTunnel``, then misbehaves at the WebSocket level: a message that
never ends, a frame announcing more bytes than any batch, a relay that stops reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

import devtunnel.agent.local_ws as local_ws_module
import devtunnel.agent.socket as socket_module

from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.socket import MAX_FRAME
from devtunnel.agent.tunnel import AgentTunnel
from devtunnel.protocol import frames as f
from devtunnel.protocol.events import ResponseReceived, WebSocketClosed
from devtunnel.protocol.relay_side import RelayConnection
from tests.helpers import async_wait_for
from tests.net.tunnel_fixtures import local_websocket, read_hello

RelayScript = Callable[[ServerConnection, RelayConnection], Awaitable[None]]


@asynccontextmanager
async def hostile_relay(script: RelayScript, *, target: str = "9", **server: object) -> AsyncIterator[AgentTunnel]:
    """An agent tunnel (to ``target``) connected to a relay that welcomes it, then runs ``script``."""

    async def relay(ws: ServerConnection) -> None:
        conn = RelayConnection()
        await read_hello(ws, conn)
        conn.send_welcome("hostile", "http://hostile.localhost", {})
        await ws.send(conn.data_to_send())
        await script(ws, conn)

    options: dict[str, object] = {"max_size": None, "compression": None}
    options.update(server)
    async with serve(relay, "127.0.0.1", 0, **options) as srv:  # type: ignore[arg-type]
        port = srv.sockets[0].getsockname()[1]
        tunnel = AgentTunnel(
            TunnelConfig(target=target, name="hostile"),
            relay_url=f"ws://127.0.0.1:{port}/_devtunnel/connect",
            sink=None,
            on_change=lambda info: None,
        )
        await tunnel.start()
        try:
            yield tunnel
        finally:
            await asyncio.wait_for(tunnel.stop(), 30)


def _pings(n: int) -> bytes:
    return f.frame(f.PING, 0, 0, b"hostile!") * n


async def test_a_message_that_never_ends_is_read_fragment_by_fragment() -> None:
    # The tunnel protocol is a byte stream: the agent must act on each fragment as it comes.
    # Before, it joined the fragments until the last one: a relay that never sent it grew the
    # agent's memory without bound (400 MB of fragments: the agent's VmRSS passed 1 GiB).
    ponged = asyncio.Event()
    finished = asyncio.Event()

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        async def reader() -> None:
            async for message in ws:
                if f.frame(f.PONG, 0, 0, b"hostile!") in message:  # type: ignore[operator]
                    ponged.set()

        task = asyncio.create_task(reader())

        async def fragments() -> AsyncIterator[bytes]:
            yield _pings(1)
            for _ in range(50):  # more fragments, still no end of message
                yield b""
            await asyncio.wait_for(ponged.wait(), 10)  # the PONG must come before the message ends
            yield b""

        try:
            await ws.send(fragments())
            finished.set()
        finally:
            task.cancel()

    async with hostile_relay(script):
        await asyncio.wait_for(finished.wait(), 15)
    assert ponged.is_set()


async def test_a_frame_larger_than_any_batch_is_refused_by_its_header() -> None:
    # A frame header announcing 1 TiB: the agent closes the connection with 1009 at once, where
    # it used to wait (and buffer) for the whole payload.
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        ws.transport.write(b"\x82\x7f" + (1 << 40).to_bytes(8, "big") + _pings(1000))
        try:
            await asyncio.wait_for(ws.wait_closed(), 10)
        finally:
            if not closed.done():
                closed.set_result(ws.close_code)

    async with hostile_relay(script):
        assert await asyncio.wait_for(closed, 15) == 1009


async def test_a_frame_of_max_frame_bytes_is_taken() -> None:
    # The bound leaves a devtunnel relay's batches alone: a frame of MAX_FRAME bytes passes
    # (frames of a type the agent does not know, which it skips, then one PING).
    ponged = asyncio.Event()
    skipped = f.frame(0x42, 0, 0, bytes((1 << 20) - 9))  # 1 MiB with its header
    payload = skipped * (MAX_FRAME // len(skipped) - 1) + f.frame(0x42, 0, 0, bytes((1 << 20) - 9 - 17)) + _pings(1)
    assert len(payload) == MAX_FRAME

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        ws.transport.write(b"\x82\x7f" + len(payload).to_bytes(8, "big") + payload)
        async for message in ws:
            if f.frame(f.PONG, 0, 0, b"hostile!") in message:  # type: ignore[operator]
                ponged.set()
                return

    async with hostile_relay(script):
        await asyncio.wait_for(ponged.wait(), 30)


async def test_a_relay_that_stops_reading_cannot_grow_the_agents_buffer_and_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The relay floods PINGs and reads nothing. Before, the agent kept reading and queued a PONG
    # for each (21 MB of PINGs: 12.7 MB held in its socket's buffer), and the connection hung for
    # ever: websockets' keepalive ping and closing handshake wait for that buffer to drain.
    # Now the agent stops reading while its socket is full, and drops a socket that stays full.
    monkeypatch.setattr(socket_module, "STALL_TIMEOUT", 1.0)
    connections: list[ServerConnection] = []
    dropped = asyncio.Event()
    sent = 0

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        nonlocal sent
        connections.append(ws)
        if len(connections) > 1:
            await ws.wait_closed()  # the reconnection: a quiet relay
            return
        batch = _pings(60_000)  # 1 MB
        try:
            async with asyncio.timeout(5):
                while sent < 40 << 20:
                    await ws.send(batch)
                    sent += len(batch)
        except (TimeoutError, ConnectionClosed):
            pass  # the agent stopped reading (our own send waits on it), or dropped us
        await ws.wait_closed()
        dropped.set()

    async with hostile_relay(script, max_queue=1) as tunnel:
        session = tunnel._session
        assert session is not None
        transport = session.ws.transport
        held = 0

        async def watch() -> None:
            nonlocal held
            while True:
                held = max(held, transport.get_write_buffer_size())
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait_for(dropped.wait(), 30)
        finally:
            watcher.cancel()
            assert held < 4 << 20, f"the agent held {held} bytes for a relay that reads nothing ({sent} bytes sent)"
        await async_wait_for(lambda: len(connections) == 2, what="the agent to reconnect")


async def test_a_websocket_message_that_never_ends_is_closed_with_1009(monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent gathers a message's fragments for the local service, crediting each as it comes.
    # Before, a relay that never sent the last fragment grew that message without bound (flow
    # control gave the credit back each time); now past MAX_MESSAGE the WebSocket closes with 1009.
    monkeypatch.setattr(local_ws_module, "MAX_MESSAGE", 1 << 20)
    closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    sent = 0

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        nonlocal sent
        sid = conn.open_request(b"GET", b"/chat", b"1.1", ((b"Host", b"hostile.localhost"),), end_stream=True,
                                websocket=True)
        await ws.send(conn.data_to_send())
        accepted = False
        async for message in ws:
            for event in conn.receive_data(message):  # type: ignore[arg-type]
                if isinstance(event, ResponseReceived):
                    accepted = event.status == 101
                elif isinstance(event, WebSocketClosed) and not closed.done():
                    closed.set_result(event.code)
            if accepted and not closed.done() and sent < 8 << 20:
                while conn.send_window(sid) >= 65536 and sent < 8 << 20:
                    conn.send_ws_message(sid, bytes(65536), text=False, fin=False)  # never the last fragment
                    sent += 65536
            if conn.wants_to_send:
                await ws.send(conn.data_to_send())

    with local_websocket() as (port, _):
        async with hostile_relay(script, target=str(port)):
            assert await asyncio.wait_for(closed, 15) == 1009
