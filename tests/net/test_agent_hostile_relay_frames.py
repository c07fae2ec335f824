"""The agent reads its relay's WebSocket frames itself (``agent.socket``): any split of them
reaches the tunnel protocol whole, control frames still reach websockets, and a frame the
WebSocket protocol forbids closes the connection with the code websockets gives it.

A scripted relay (a real websockets server on loopback) welcomes a real ``AgentTunnel``, then
writes raw frames to its transport.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.server import ServerConnection

from devtunnel.agent.socket import TunnelSocket
from devtunnel.agent.tunnel import AgentTunnel
from devtunnel.protocol import frames as f
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


@pytest.mark.parametrize(("fin", "code"), [(True, 4000), (False, 1002)], ids=["after-a-message", "inside-a-message"])
async def test_a_close_frame_split_in_pieces_reaches_websockets(fin: bool, code: int) -> None:
    # Echoed after a whole message; inside one, websockets refuses it (1002), and so does the agent.
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
        data = ws_frame(0x2, pings(1), fin=fin) + ws_frame(0x8, (4000).to_bytes(2, "big") + b"going")
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
