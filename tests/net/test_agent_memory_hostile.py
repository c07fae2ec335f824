"""What a hostile relay can make the agent hold, counted in bytes (tracemalloc), never timed.

``Session.held`` keeps the request bytes the local service has not taken under a ceiling
(``HELD_REQUESTS``); these tests count everything the agent's process allocates meanwhile: the
bytes on their way through the WebSocket and the tunnel protocol must add a bounded slack to
the ceiling, however the relay batches them. The relay is scripted (a websockets server, in
this process): its own allocations are kept small, and made before the count starts.
"""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve

import devtunnel.agent.session as session_module

from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.session import REQUEST_WINDOW
from devtunnel.agent.socket import MAX_FRAME
from devtunnel.agent.tunnel import AgentTunnel
from devtunnel.protocol import frames as f
from devtunnel.protocol.events import StreamReset
from devtunnel.protocol.relay_side import RelayConnection
from tests.net.tunnel_fixtures import read_hello

MiB = 1 << 20
CEILING = 8 * MiB
SLACK = 16 * MiB
"""What the agent may allocate past the ceiling while a relay's bytes go through it: one read of
the socket and its frames' payloads, a tunnel frame being assembled, the copies the local
connections' transports make of what they could not send yet. Before, a WebSocket frame cost
two copies of it (websockets' and the tunnel protocol's payloads): 120 MiB for 60 MiB."""
PONG = f.frame(f.PONG, 0, 0, b"hostile!")


@contextmanager
def counting() -> Iterator[None]:
    """tracemalloc on, for the block."""
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def rise_since(base: int) -> int:
    """The most bytes traced since ``tracemalloc.reset_peak()``, less ``base``."""
    return tracemalloc.get_traced_memory()[1] - base


@asynccontextmanager
async def local_service_that_reads_nothing() -> AsyncIterator[int]:
    """A loopback service that takes connections and never reads (small socket buffers: the
    kernel holds little of what it does not read); yields its port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind(("127.0.0.1", 0))
    transports: list[asyncio.Transport] = []

    class Deaf(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            transports.append(transport)
            transport.pause_reading()

    server = await asyncio.get_running_loop().create_server(Deaf, sock=sock)
    try:
        yield sock.getsockname()[1]
    finally:
        server.close()
        for transport in transports:
            transport.abort()


def uploads_in_one_frame(first_sid: int, streams: int, chunk: int) -> bytes:
    """One WebSocket binary frame (its header included, the relay writes it as it is): each
    stream's whole window of request body in DATA frames of ``chunk`` bytes, then a PING."""
    body = bytes(chunk)
    frames = [
        f.frame(f.DATA, 0, sid, body)
        for sid in range(first_sid, first_sid + 2 * streams, 2)
        for _ in range(REQUEST_WINDOW // chunk)
    ]
    frames.append(f.frame(f.PING, 0, 0, b"hostile!"))
    payload = b"".join(frames)
    assert len(payload) <= MAX_FRAME
    return b"\x82\x7f" + len(payload).to_bytes(8, "big") + payload


async def write_in_pieces(ws: ServerConnection, data: bytes, piece: int = 256 << 10) -> None:
    """Write ``data`` to the agent's socket a piece at a time, so that the relay's transport
    never copies more than a piece of it into its own buffer."""
    view = memoryview(data)
    for start in range(0, len(view), piece):
        ws.transport.write(view[start : start + piece])
        await ws.drain()


@pytest.mark.parametrize("chunk", [256 << 10, 1 << 20], ids=["256KiB-data-frames", "1MiB-data-frames"])
async def test_uploads_batched_in_one_frame_of_max_frame_bytes_cost_the_ceiling_and_a_bounded_slack(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    # 15 streams, each sent its whole window (4 MiB) in one WebSocket frame of 60 MiB, to a
    # local service that reads nothing. The session holds at most the ceiling (8 MiB here) and
    # resets the streams past it. Before, the agent's allocations rose by 120 MiB while the
    # frame went through: websockets read the whole frame before handing it on, and the tunnel
    # protocol then parsed every DATA payload of it at once (a copy of the frame); now each read
    # of the socket is handed on as it comes (10 to 12 MiB).
    monkeypatch.setattr(session_module, "HELD_REQUESTS", CEILING)
    streams = 15
    resets: set[int] = set()
    ponged = asyncio.Event()
    rise: list[int] = []

    async def relay(ws: ServerConnection) -> None:
        conn = RelayConnection()
        await read_hello(ws, conn)
        conn.send_welcome("hostile", "http://hostile.localhost", {})
        headers = ((b"Host", b"hostile.localhost"), (b"Content-Length", str(2 * REQUEST_WINDOW).encode()))
        sids = [conn.open_request(b"POST", b"/upload", b"1.1", headers, end_stream=False) for _ in range(streams)]
        await ws.send(conn.data_to_send())
        frame = uploads_in_one_frame(sids[0], streams, chunk)
        await asyncio.sleep(0)  # (the frame is built before the count starts)
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        await write_in_pieces(ws, frame)
        del frame
        async for message in ws:
            assert isinstance(message, bytes)
            for event in conn.receive_data(message):
                if isinstance(event, StreamReset):
                    resets.add(event.stream_id)
            if PONG in message:  # the agent handled all the frame: the PING was its end
                rise.append(rise_since(base))
                ponged.set()
                return

    with counting():
        async with local_service_that_reads_nothing() as port:
            async with serve(relay, "127.0.0.1", 0, max_size=None, compression=None) as srv:
                relay_port = srv.sockets[0].getsockname()[1]
                tunnel = AgentTunnel(
                    TunnelConfig(target=str(port), name="hostile"),
                    relay_url=f"ws://127.0.0.1:{relay_port}/_devtunnel/connect",
                    sink=None,
                    on_change=lambda info: None,
                    body_cap=0,  # the records keep no body: their own bound is the body budget's
                )
                await tunnel.start()
                try:
                    await asyncio.wait_for(ponged.wait(), 60)
                finally:
                    await asyncio.wait_for(tunnel.stop(), 30)
    assert tunnel.requests == streams
    assert len(resets) >= streams // 2, resets  # past the ceiling: reset (what the kernel took was not held)
    assert rise[0] <= CEILING + SLACK, f"the agent's allocations rose by {rise[0] / MiB:.0f} MiB"
