"""The internals of ``websockets`` the agent's socket relies on (``devtunnel/agent/socket.py``),
checked against the installed release: pyproject.toml pins the range these hold in (17.4 on;
earlier releases lack some of them: the agent's tests fail on 13 and 15, and no release before
17.4 has ``set_connection_exc``, which a failed send and a stalled relay call)."""

from __future__ import annotations

import inspect

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Protocol, State
from websockets.streams import StreamReader


def test_the_release_is_in_the_range_pyproject_allows() -> None:
    major, minor = (int(part) for part in websockets.version.version.split(".")[:2])
    assert major == 17 and minor >= 4, websockets.version.version


def test_the_client_connection_takes_the_calls_the_agent_overrides_and_makes() -> None:
    # TunnelSocket overrides these (asyncio.Protocol callbacks and the frame hook) and calls them.
    for name in ("data_received", "process_event", "pause_writing", "resume_writing", "connection_lost",
                 "send_data", "set_connection_exc"):
        assert callable(getattr(ClientConnection, name, None)), name
    assert list(inspect.signature(ClientConnection.process_event).parameters) == ["self", "event"]
    assert list(inspect.signature(ClientConnection.data_received).parameters) == ["self", "data"]


def test_the_protocol_keeps_a_reader_buffer_and_fails_and_sends_as_the_agent_asks() -> None:
    for name in ("fail", "send_binary"):
        assert callable(getattr(Protocol, name, None)), name
    assert list(inspect.signature(Protocol.fail).parameters)[:3] == ["self", "code", "reason"]
    reader = StreamReader()
    assert isinstance(reader.buffer, bytearray)  # read before the agent takes over the frames


def test_the_frame_and_state_names_the_agent_reads() -> None:
    assert {Opcode.CONT.value, Opcode.TEXT.value, Opcode.BINARY.value, Opcode.CLOSE.value} == {0, 1, 2, 8}
    assert CloseCode.PROTOCOL_ERROR == 1002 and CloseCode.MESSAGE_TOO_BIG == 1009
    assert State.OPEN and Frame(Opcode.BINARY, b"x").data == b"x"


def test_a_failed_connection_discards_what_comes_by_a_parser_named_discard() -> None:
    # _discards (agent/socket.py) tells a connection failed on the agent's side by this name.
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    protocol = ClientProtocol(parse_uri("ws://relay.localhost/"))
    protocol.state = State.OPEN
    assert getattr(protocol.parser, "__name__", "") != "discard"
    protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
    assert getattr(protocol.parser, "__name__", "") == "discard"
