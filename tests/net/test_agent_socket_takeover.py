"""The agent's frame reader (``agent.socket``) ends a connection and hands on bytes exactly as
``websockets``' own parser does, wherever the reads of the socket cut the relay's bytes: at the
handshake's answer, inside a frame's header or payload, before or after the reader takes over.

Each case runs twice on a real socket (a socket pair): through the agent's socket as it is, and
through the same socket told to leave every frame to ``websockets`` (the reference). The reads
are handed to the socket's ``data_received`` as given; what the agent writes back is read from
the other end of the pair and parsed by ``websockets``' server side.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri
from websockets.utils import accept_key

from devtunnel.agent import socket as agent_socket
from devtunnel.agent.socket import MAX_FRAME, TunnelSocket
from devtunnel.protocol import frames as f
from tests.net.test_agent_hostile_relay_frames import ws_frame

URI = parse_uri("ws://relay.localhost/_devtunnel/connect")
PINGS = f.frame(f.PING, 0, 0, b"hostile!") * 12
NESTED = ws_frame(0x2, b"inner") * 50
"""Payload bytes that read as frames of their own: a reader that takes a frame's payload (or its
2-byte length) for a header does not fail at once, it hands on other bytes."""


def close_payload(code: int, reason: bytes) -> bytes:
    return code.to_bytes(2, "big") + reason


@dataclass(frozen=True)
class Outcome:
    """What the agent's socket did with the relay's bytes."""

    handed: tuple[tuple[bool, bytes], ...]
    """What reached ``on_message``: runs of (text, bytes), the bytes of a run joined."""
    state: str
    close_sent: tuple[int, str] | None
    close_rcvd: tuple[int, str] | None
    error: str | None
    """websockets' parser error (its type and message)."""
    written: tuple[tuple[int, bytes], ...]
    """The frames the agent wrote back (opcode, payload): PONGs, its CLOSE."""


def runs(pieces: Sequence[tuple[bool, bytes]]) -> tuple[tuple[bool, bytes], ...]:
    joined: list[tuple[bool, bytes]] = []
    for text, data in pieces:
        if joined and joined[-1][0] == text:
            joined[-1] = (text, joined[-1][1] + data)
        else:
            joined.append((text, data))
    return tuple(joined)


async def read_through(stream: bytes, cuts: Sequence[int], *, handler_after: int = 0, plain: bool) -> Outcome:
    """Open an agent's socket, answer its handshake, and hand it ``stream`` (the relay's frames) in
    reads cut at ``cuts``: the first read carries the handshake's answer and ``stream`` up to the
    first cut. ``on_message`` is set after read number ``handler_after`` (0: the first), as the
    agent's session sets it once the handshake is done. ``plain``: ``websockets`` reads every frame."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    try:
        protocol = ClientProtocol(URI, max_size=(None, MAX_FRAME))
        _, sock = await loop.create_connection(lambda: TunnelSocket(protocol, ping_interval=None), sock=ours)
        assert isinstance(sock, TunnelSocket)
        sock._plain = plain
        protocol.send_request(protocol.connect())
        sock.send_data()
        request = b""
        async with asyncio.timeout(10):
            while b"\r\n\r\n" not in request:
                request += await loop.sock_recv(theirs, 65536)
        answer = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(protocol.key)}\r\n\r\n"
        ).encode()
        bounds = [0, *sorted(set(cuts)), len(stream)]
        reads = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        reads[0] = answer + reads[0]
        handed: list[tuple[bool, bytes]] = []
        for i, data in enumerate(reads):
            sock.data_received(data)
            if i == handler_after:
                sock.on_message = lambda piece, text: handed.append((text, piece))
        back = request[request.index(b"\r\n\r\n") + 4 :]
        while True:  # the agent's writes went to the socket as it made them (nothing was buffered)
            try:
                chunk = theirs.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            back += chunk
        relay = ServerProtocol(state=State.OPEN, max_size=None)
        relay.receive_data(back)
        written = tuple((e.opcode.value, bytes(e.data)) for e in relay.events_received() if isinstance(e, Frame))
        exc = protocol.parser_exc
        outcome = Outcome(
            handed=runs(handed),
            state=protocol.state.name,
            close_sent=None if protocol.close_sent is None else (protocol.close_sent.code, protocol.close_sent.reason),
            close_rcvd=None if protocol.close_rcvd is None else (protocol.close_rcvd.code, protocol.close_rcvd.reason),
            error=None if exc is None else f"{type(exc).__name__}: {exc}",
            written=written,
        )
        sock.transport.abort()
        await asyncio.wait_for(asyncio.shield(sock.connection_lost_waiter), 10)
        return outcome
    finally:
        theirs.close()


def handed_so_far(reference: Outcome, ours: Outcome) -> bool:
    """Whether ``ours`` handed on what ``reference`` did, and at most part of one more frame (a
    stream cut inside a data frame: the reader hands on what came of it, websockets nothing)."""
    ref, got = reference.handed, ours.handed
    if not ref:
        return len(got) <= 1
    *whole, last = ref
    if tuple(whole) != got[: len(whole)] or not len(ref) <= len(got) <= len(ref) + 1:
        return False
    text, data = got[len(whole)]
    return text == last[0] and data.startswith(last[1]) and (len(got) == len(ref) or data == last[1])


async def assert_read_as_websockets_reads(stream: bytes, cuts: Sequence[int], *, handler_after: int = 0,
                                          cut_short: bool = False) -> None:
    reference = await read_through(stream, cuts, handler_after=handler_after, plain=True)
    ours = await read_through(stream, cuts, handler_after=handler_after, plain=False)
    where = f"reads cut at {sorted(set(cuts))}, handler after read {handler_after}, stream {stream!r}"
    if cut_short:
        assert handed_so_far(reference, ours), where
        reference = replace(reference, handed=ours.handed)
    assert ours == reference, where


# A fragmented message: a short first frame, a WebSocket PING between the fragments, frames with
# a 2-byte length (0x0105: it reads as the header of a TEXT frame of 5 bytes) and an 8-byte one,
# an empty PONG, an empty last frame.
MESSAGE = (
    ws_frame(0x2, NESTED[:14], fin=False)
    + ws_frame(0x9, b"ws-ping")
    + ws_frame(0x0, NESTED[:0x105], fin=False)
    + ws_frame(0x0, NESTED[:40], fin=False, wide=True)
    + ws_frame(0xA, b"")
    + ws_frame(0x0, b"")
)
OPEN_MESSAGE = MESSAGE[: -len(ws_frame(0x0, b""))]


@pytest.mark.parametrize(
    ("stream", "code"),
    [
        pytest.param(MESSAGE + ws_frame(0x2, PINGS[:17]) + ws_frame(0x8, close_payload(4000, b"going")), 4000,
                     id="close-after-messages"),
        pytest.param(OPEN_MESSAGE + ws_frame(0x8, close_payload(4000, b"\xff")), 1007,
                     id="close-with-invalid-utf8-inside-a-message"),
        pytest.param(OPEN_MESSAGE + ws_frame(0x8, close_payload(4000, b"going")), 1002, id="close-inside-a-message"),
        pytest.param(OPEN_MESSAGE + ws_frame(0x2, PINGS[:17]), 1002, id="new-message-inside-a-message"),
        pytest.param(MESSAGE + ws_frame(0xB, b"reserved"), 1002, id="reserved-control-opcode"),
        pytest.param(MESSAGE + ws_frame(0xB, b"reserved")[:2], 1002, id="reserved-control-opcode-header"),
        pytest.param(MESSAGE + b"\x83\x7e\x01", 1002, id="unknown-opcode-part-of-a-2-byte-length"),
        pytest.param(OPEN_MESSAGE + b"\x80\xff", 1002, id="masked-an-8-byte-length-to-come"),
    ],
)
async def test_every_cut_from_the_handshake_on_reads_as_websockets_reads(stream: bytes, code: int) -> None:
    # The handshake's answer and the frames up to each byte in one read (the reader takes over
    # from websockets at the next read, or later: websockets goes on where it holds part of a
    # frame), then the rest in one read, or byte by byte.
    for cut in range(len(stream) + 1):
        await assert_read_as_websockets_reads(stream, [cut])
        await assert_read_as_websockets_reads(stream, [cut, *range(cut + 1, min(cut + 12, len(stream)))])
    ours = await read_through(stream, range(len(stream)), plain=False)
    assert ours.close_sent is not None and ours.close_sent[0] == code


async def test_a_message_begun_before_the_reader_took_over_goes_on_and_only_continuations_may_follow() -> None:
    # websockets read the message's first frame (before on_message was set: it waits for recv());
    # the reader, taking over after it, knows a message is open.
    opened = ws_frame(0x2, PINGS[:5], fin=False)
    for rest, code in ((ws_frame(0x0, PINGS[5:]), None), (ws_frame(0x2, PINGS[5:]), 1002)):
        stream = opened + ws_frame(0x9, b"ws-ping") + rest
        await assert_read_as_websockets_reads(stream, [len(opened), len(opened) + 9], handler_after=1)
        ours = await read_through(stream, [len(opened), len(opened) + 9], handler_after=1, plain=False)
        assert (ours.close_sent and ours.close_sent[0]) == code, ours


TOO_LARGE = b"\x80\x7f" + (MAX_FRAME + 1).to_bytes(8, "big")
"""The header of a last continuation frame announcing more than ``MAX_FRAME`` bytes."""


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(OPEN_MESSAGE + TOO_LARGE, id="after-fragments"),
        pytest.param(ws_frame(0x2, b"", fin=False) + TOO_LARGE, id="after-an-empty-fragment"),
        pytest.param(MESSAGE + ws_frame(0x1, PINGS[:3], fin=False) + TOO_LARGE, id="in-a-second-message"),
        pytest.param(MESSAGE + TOO_LARGE[:1].replace(b"\x80", b"\x82") + TOO_LARGE[1:], id="outside-a-message"),
    ],
)
async def test_a_frame_too_large_inside_a_message_closes_with_the_size_websockets_counted(stream: bytes) -> None:
    # websockets' reason for 1009 counts the bytes of the message read before the frame: those
    # the reader read too, before it handed the frame to websockets.
    for cuts in ([0], [len(stream) - len(TOO_LARGE)], [14, len(stream) - 3], range(len(stream))):
        await assert_read_as_websockets_reads(stream, cuts)
    for handler_after in (1, 2):  # websockets read the message's first frame(s) before the reader took over
        await assert_read_as_websockets_reads(stream, [16, 16 + 9, len(stream) - 5], handler_after=handler_after)
    ours = await read_through(stream, range(len(stream)), plain=False)
    reference = await read_through(stream, [], plain=True)
    assert ours.close_sent is not None and ours.close_sent[0] == 1009
    assert ours.close_sent == reference.close_sent, (ours.close_sent, reference.close_sent)


# -- random streams, cut at random ------------------------------------------------------

_PAYLOAD_SIZES = st.sampled_from([0, 1, 7, 125, 126, 0x105, 300])
_CLOSE_PAYLOADS = st.sampled_from([
    b"", close_payload(1000, b"bye"), close_payload(4000, b"\xff\xfe"), close_payload(999, b""), b"\x03",
])


@st.composite
def relay_frames(draw: st.DrawFn) -> bytes:
    """WebSocket frames a relay might send: mostly what the protocol allows (continuations only
    inside a message, control frames anywhere), some it forbids."""
    out = b""
    inside = False
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["data"] * 6 + ["ping", "pong", "close", "forbidden"]))
        if kind == "data":
            opcode = 0x0 if inside else draw(st.sampled_from([0x2, 0x2, 0x2, 0x1]))
            fin = draw(st.booleans())
            payload = draw(st.sampled_from([PINGS, NESTED]))[: draw(_PAYLOAD_SIZES)]
            out += ws_frame(opcode, payload, fin=fin, wide=draw(st.booleans()))
            inside = not fin
        elif kind in ("ping", "pong"):
            out += ws_frame(0x9 if kind == "ping" else 0xA, b"p" * draw(st.sampled_from([0, 1, 125])))
        elif kind == "close":
            out += ws_frame(0x8, draw(_CLOSE_PAYLOADS))
        else:
            out += draw(st.sampled_from([
                b"\x82\x85abcd" + bytes(5),  # masked
                ws_frame(0x2, b"x", first=0x40),  # a reserved bit
                ws_frame(0x3, b"x"),  # an unknown opcode
                ws_frame(0x3, bytes(130)),  # an unknown opcode, a 2-byte length
                b"\x82\xfe\x00\x82abcd" + bytes(130),  # masked, a 2-byte length
                ws_frame(0xB, b"x"),  # a reserved control opcode
                ws_frame(0x9, bytes(126)),  # a control frame too long
                ws_frame(0x9, b"x", fin=False),  # a fragmented control frame
                ws_frame(0x0, b"x"),  # a continuation (out of place outside a message)
                ws_frame(0x2, b"x"),  # a new message (out of place inside one)
                b"\x82\x7f" + (MAX_FRAME + 1).to_bytes(8, "big"),  # more than MAX_FRAME announced
            ]))
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_streams_cut_at_random_read_as_websockets_reads(data: st.DataObject) -> None:
    stream = data.draw(relay_frames(), label="stream")
    cut_short = data.draw(st.booleans(), label="cut short")
    if cut_short:
        stream = stream[: data.draw(st.integers(0, len(stream)), label="kept")]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6), label="cuts")
    handler_after = data.draw(st.integers(0, 2), label="handler after")
    asyncio.run(assert_read_as_websockets_reads(stream, cuts, handler_after=handler_after, cut_short=cut_short))


# -- the internals of websockets the takeover reads -------------------------------------

def test_websockets_parser_is_told_between_frames_only_where_no_part_of_a_frame_was_read() -> None:
    # agent.socket._between_frames reads where websockets' parser waits (its generators' names).
    protocol = ClientProtocol(URI, max_size=(None, MAX_FRAME))
    protocol.send_request(protocol.connect())
    answer = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(protocol.key)}\r\n\r\n"
    ).encode()
    protocol.receive_data(answer)
    assert protocol.state is State.OPEN
    assert agent_socket._between_frames(protocol)
    frame = ws_frame(0x2, bytes(300), wide=True)
    for i in range(1, len(frame)):  # each byte of a frame: inside it
        protocol.receive_data(frame[i - 1 : i])
        assert not agent_socket._between_frames(protocol), i
    protocol.receive_data(frame[-1:])
    assert agent_socket._between_frames(protocol)
    assert protocol.current_size is None
    protocol.receive_data(ws_frame(0x2, b"x", fin=False))
    assert agent_socket._between_frames(protocol) and protocol.current_size == 1  # read by the reader
