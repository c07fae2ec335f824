"""The agent reads its relay's WebSocket frames itself (``agent.socket``): any split of them
reaches the tunnel protocol whole, control frames still reach websockets, and a frame the
WebSocket protocol forbids closes the connection with the code websockets gives it.

A scripted relay (a real websockets server on loopback) welcomes a real ``AgentTunnel``, then
writes raw frames to its transport; where the frames must start in the read that brings the
handshake's answer, the relay is raw bytes on a loopback socket (``raw_relay``).
(``test_agent_socket_takeover.py`` compares the agent's socket with websockets' own parser at
every cut of the relay's bytes.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.info import TunnelState
from devtunnel.agent.socket import TunnelSocket
from devtunnel.agent.tunnel import AgentTunnel
from devtunnel.protocol import frames as f
from devtunnel.protocol.agent_side import AgentConnection
from devtunnel.protocol.events import PongReceived
from devtunnel.protocol.relay_side import RelayConnection
from tests.helpers import async_wait_for
from tests.net.test_agent_hostile_relay import close_code_after, hostile_relay


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, wide: bool = False, first: int = 0) -> bytes:
    """A server's (unmasked) WebSocket frame; ``wide``: its length in the 8-byte form; ``first``
    is or-ed into the first byte (reserved bits)."""
    head = bytes([(0x80 if fin else 0) | opcode | first])
    n = len(payload)
    if wide:
        return head + b"\x7f" + n.to_bytes(8, "big") + payload
    if n < 126:
        return head + bytes([n]) + payload
    return head + b"\x7e" + n.to_bytes(2, "big") + payload


def pings(n: int) -> bytes:
    return f.frame(f.PING, 0, 0, b"hostile!") * n


def agent_socket(tunnel: AgentTunnel) -> TunnelSocket:
    """The socket of the tunnel's connection to the relay (its reads are fed to it by hand)."""
    session = tunnel._session
    assert session is not None
    return session.ws


async def test_frames_split_anywhere_and_control_frames_inside_a_message_reach_the_protocol_whole() -> None:
    # 25 tunnel PINGs in one fragmented message: a short frame, a WebSocket PING between the
    # fragments, a frame with a 2-byte length, one with an 8-byte length, an empty last one;
    # handed to the agent's socket a byte at a time. Every tunnel PING is answered.
    wanted = 25
    stream = pings(wanted)
    data = (
        ws_frame(0x2, stream[:5], fin=False)
        + ws_frame(0x9, b"ws-ping")
        + ws_frame(0x0, stream[5:200], fin=False)
        + ws_frame(0x0, stream[200:], fin=False, wide=True)
        + ws_frame(0x0, b"")
    )
    pongs: list[bytes] = []
    all_in = asyncio.Event()
    welcomed: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        welcomed.set_result(ws)
        async for message in ws:
            for event in conn.receive_data(message):  # type: ignore[arg-type]
                if isinstance(event, PongReceived):
                    pongs.append(event.payload)
            if len(pongs) >= wanted:
                all_in.set()

    async with hostile_relay(script) as tunnel:
        await asyncio.wait_for(welcomed, 10)
        sock = agent_socket(tunnel)
        for i in range(len(data)):
            sock.data_received(data[i : i + 1])
        await asyncio.wait_for(all_in.wait(), 10)
        assert pongs == [b"hostile!"] * wanted
        assert sock.protocol.state.name == "OPEN"
        # Then whole frames again, several in one read: answered as well.
        sock.data_received(ws_frame(0x2, pings(1)) + ws_frame(0x2, pings(2)))
        await async_wait_for(lambda: len(pongs) == wanted + 3, what="the PINGs of whole frames to be answered")


@pytest.mark.parametrize(
    ("fin", "reason", "code"),
    [
        pytest.param(True, b"going", 4000, id="after-a-message"),
        pytest.param(False, b"going", 1002, id="inside-a-message"),
        pytest.param(True, b"\xffgoing", 1007, id="invalid-utf8-reason-after-a-message"),
        pytest.param(False, b"\xffgoing", 1007, id="invalid-utf8-reason-inside-a-message"),
    ],
)
async def test_a_close_frame_split_in_pieces_reaches_websockets(fin: bool, reason: bytes, code: int) -> None:
    # Echoed after a whole message; inside one, websockets refuses it (1002), and so does the
    # agent; a reason that is not UTF-8 is refused first, wherever it comes (1007), as websockets does.
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
    welcomed: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        if welcomed.done():
            return  # the agent reconnecting
        welcomed.set_result(ws)
        try:
            await asyncio.wait_for(ws.wait_closed(), 10)
        finally:
            if not closed.done():
                closed.set_result(ws.close_code)

    async with hostile_relay(script) as tunnel:
        await asyncio.wait_for(welcomed, 10)
        sock = agent_socket(tunnel)
        data = ws_frame(0x2, pings(1), fin=fin) + ws_frame(0x8, (4000).to_bytes(2, "big") + reason)
        for i in range(0, len(data), 3):
            sock.data_received(data[i : i + 3])
        assert await asyncio.wait_for(closed, 15) == code


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"\x82\x85abcd" + bytes(5), id="masked"),
        pytest.param(ws_frame(0x2, pings(1), first=0x40), id="reserved-bit"),
        pytest.param(ws_frame(0x3, pings(1)), id="unknown-opcode"),
        pytest.param(ws_frame(0x0, pings(1)), id="continuation-outside-a-message"),
        pytest.param(ws_frame(0x2, pings(1), fin=False) + ws_frame(0x2, pings(1)), id="message-inside-a-message"),
        pytest.param(ws_frame(0x9, bytes(126)), id="control-frame-too-long"),
        pytest.param(ws_frame(0x9, b"x", fin=False), id="fragmented-control-frame"),
    ],
)
async def test_a_frame_the_websocket_protocol_forbids_closes_the_connection_with_1002(frame: bytes) -> None:
    assert await close_code_after(frame) == 1002


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(ws_frame(0xB, bytes(100))[:2], id="reserved-control-opcode"),
        pytest.param(ws_frame(0x3, bytes(300))[:2], id="unknown-opcode-with-a-2-byte-length"),
        pytest.param(b"\x82\xff", id="masked-with-an-8-byte-length"),
    ],
)
async def test_a_frame_websockets_refuses_by_its_first_two_bytes_is_refused_by_them(header: bytes) -> None:
    # websockets refuses these as soon as it reads their first two bytes; the agent waited for
    # the rest of the header, or the payload, which this relay never sends.
    assert await close_code_after(header) == 1002


async def test_nothing_is_handed_on_after_the_agent_failed_the_connection() -> None:
    # A keepalive timeout fails the connection on the agent's side; websockets discards all that
    # comes after (RFC 6455 7.1.7), and so does the agent's reader: no tunnel frame reaches the session.
    welcomed: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        if not welcomed.done():
            welcomed.set_result(ws)
        await ws.wait_closed()

    async with hostile_relay(script) as tunnel:
        await asyncio.wait_for(welcomed, 10)
        sock = agent_socket(tunnel)
        sock.data_received(ws_frame(0x2, pings(1))[:1])  # the reader holds part of a header
        handed: list[bytes] = []
        sock.on_message = lambda data, text: handed.append(data)
        sock.protocol.fail(1011, "keepalive ping timeout")
        sock.data_received(ws_frame(0x2, pings(1))[1:] + ws_frame(0x2, pings(2)))
        assert handed == []


AFTER = f.frame(f.PING, 0, 0, b"after!!!")
"""A tunnel PING in a frame of its own after the WELCOME's: its PONG says the agent reads on."""


def welcome_message(name: str) -> bytes:
    """The tunnel bytes of a relay's WELCOME to this agent (made before its HELLO came)."""
    agent = AgentConnection()
    agent.send_hello("", name, {})
    relay = RelayConnection()
    relay.receive_data(agent.data_to_send())
    relay.send_welcome(name, f"http://{name}.localhost", {})
    return relay.data_to_send()


E = TypeVar("E", Request, Frame)


async def next_event(reader: asyncio.StreamReader, ws: ServerProtocol, wanted: type[E]) -> E | None:
    """The next event of type ``wanted`` the agent's bytes make (None: the agent's connection ended)."""
    while True:
        for event in ws.events_received():
            if isinstance(event, wanted):
                return event
        data = await reader.read(65536)
        if not data:
            return None
        ws.receive_data(data)


@asynccontextmanager
async def raw_relay(first: bytes, then: bytes) -> AsyncIterator[tuple[AgentTunnel, asyncio.Future[bool], list[int]]]:
    """A relay of raw bytes: it writes its handshake answer and ``first`` in one write, waits for
    the agent's HELLO (the agent read them by then, in one read), then writes ``then``. Yields the
    tunnel, whether the agent answered ``AFTER`` on that connection (False: it closed it first),
    and the connections made (a connection after the first is refused)."""
    answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    connections: list[int] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first_connection = not connections
        connections.append(len(connections))
        ws = ServerProtocol(max_size=None)
        try:
            request = await next_event(reader, ws, Request)
            if request is None or not first_connection:
                return
            ws.send_response(ws.accept(request))
            writer.write(b"".join(ws.data_to_send()) + first)
            if await next_event(reader, ws, Frame) is None:  # the HELLO
                return
            writer.write(then)
            while (frame := await next_event(reader, ws, Frame)) is not None and frame.opcode is not Opcode.CLOSE:
                if f.frame(f.PONG, 0, 0, b"after!!!") in frame.data:
                    answered.set_result(True)
                    return
        finally:
            writer.close()
            if first_connection and not answered.done():
                answered.set_result(False)

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        tunnel = AgentTunnel(TunnelConfig(target="9", name="hostile"), relay_url=f"ws://127.0.0.1:{port}/_devtunnel/connect",
                             sink=None, on_change=lambda info: None)
        await tunnel.start()
        try:
            yield tunnel, answered, connections
        finally:
            await asyncio.wait_for(tunnel.stop(), 30)
    finally:
        server.close()


WELCOME = welcome_message("hostile")
PADDED = WELCOME + f.frame(0x42, 0, 0, bytes(0x105 - len(WELCOME) - 9))  # a frame type the agent skips
WELCOME_FRAMES = {
    # (WELCOME is 173 bytes: a 1-byte length holds only part of it, in a message's first frame.)
    "1-byte": ws_frame(0x2, WELCOME[:100], fin=False) + ws_frame(0x0, WELCOME[100:]),
    # The 2-byte length, 0x0105, reads as the header of a TEXT frame of 5 bytes.
    "2-byte": ws_frame(0x2, PADDED),
    "8-byte": ws_frame(0x2, WELCOME, wide=True),
}


@pytest.mark.parametrize(
    ("length", "cut"),
    [
        pytest.param("1-byte", 2, id="1-byte-length-cut-after-the-header"),
        pytest.param("2-byte", 2, id="2-byte-length-cut-before-the-length"),
        pytest.param("2-byte", 4, id="2-byte-length-cut-after-the-header"),
        pytest.param("8-byte", 2, id="8-byte-length-cut-before-the-length"),
        pytest.param("8-byte", 10, id="8-byte-length-cut-after-the-header"),
        pytest.param("2-byte", 0, id="cut-before-the-frame"),
        pytest.param("2-byte", 1, id="cut-inside-the-header"),
        pytest.param("2-byte", 5, id="cut-inside-the-payload"),
    ],
)
async def test_a_frame_begun_in_the_handshakes_read_is_read_on_where_it_was_cut(length: str, cut: int) -> None:
    # The relay's handshake answer came with the first bytes of the WELCOME's frame, read by
    # websockets, which had begun the frame. The agent's own reader took over at the next read
    # and took what followed for a frame header: the 2-byte length 0x0105 read as a TEXT frame of
    # 5 bytes, and the agent dropped the connection, never welcomed. (Bytes that read as a
    # continuation out of place went back to websockets, which went on with its frame by chance.)
    stream = WELCOME_FRAMES[length] + ws_frame(0x2, AFTER)
    async with raw_relay(stream[:cut], stream[cut:]) as (tunnel, answered, connections):
        assert await asyncio.wait_for(answered, 10), "the agent did not read on after the WELCOME"
        assert tunnel.state is TunnelState.ONLINE
        assert connections == [0]
