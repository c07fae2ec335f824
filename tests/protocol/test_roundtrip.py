"""Every frame type survives encode -> bytes -> decode unchanged, whatever it carries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtunnel.errors import ProtocolError
from devtunnel.protocol import (
    DataReceived,
    ErrorCode,
    GoAway,
    PingReceived,
    PongReceived,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    WebSocketClosed,
    WebSocketMessageReceived,
    WindowUpdated,
)
from devtunnel.protocol import frames as f
from tests.protocol.pairs import exchange, handshaken, open_get

fields = st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=200)), max_size=20).map(tuple)
tokens = st.binary(min_size=0, max_size=30)
texts = st.text(max_size=60)
final_status = st.integers(200, 999)


@settings(max_examples=150)
@given(
    method=tokens,
    target=st.binary(max_size=300),
    version=st.binary(max_size=8),
    headers=fields,
    end_stream=st.booleans(),
    remote=texts,
    scheme=st.sampled_from(["http", "https"]),
    websocket=st.booleans(),
)
def test_request_round_trips(
    method: bytes,
    target: bytes,
    version: bytes,
    headers: tuple,
    end_stream: bool,
    remote: str,
    scheme: str,
    websocket: bool,
) -> None:
    end_stream = end_stream or websocket  # a WebSocket request has no body (test_streams)
    relay, agent = handshaken()
    sid = relay.open_request(
        method, target, version, headers, end_stream=end_stream, remote_addr=remote, scheme=scheme, websocket=websocket
    )
    assert exchange(relay, agent) == [
        RequestReceived(sid, method, target, version, headers, end_stream, remote, scheme, websocket)
    ]


@settings(max_examples=150)
@given(code=final_status, reason=st.binary(max_size=60), headers=fields, end_stream=st.booleans(), version=st.binary(max_size=8))
def test_response_round_trips(code: int, reason: bytes, headers: tuple, end_stream: bool, version: bytes) -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent)
    agent.send_response(sid, code, reason, headers, end_stream=end_stream, http_version=version)
    assert exchange(agent, relay) == [ResponseReceived(sid, code, reason, headers, end_stream, version)]


@given(chunks=st.lists(st.binary(max_size=3000), max_size=8), end_stream=st.booleans())
def test_data_round_trips(chunks: list[bytes], end_stream: bool) -> None:
    relay, agent = handshaken(agent_options={"max_frame_size": 1024})
    sid = relay.open_request(b"PUT", b"/", b"1.1", (), end_stream=False)
    exchange(relay, agent)
    for chunk in chunks:
        relay.send_data(sid, chunk)
    relay.send_data(sid, b"", end_stream=end_stream)
    events = exchange(relay, agent)
    assert all(isinstance(e, DataReceived) and len(e.data) <= 1024 for e in events)
    assert b"".join(e.data for e in events) == b"".join(chunks)
    assert [e.end_stream for e in events if e.end_stream] == ([True] if end_stream else [])


@given(data=st.binary(max_size=500), text=st.booleans(), fin=st.booleans(), code=st.integers(0, 0xFFFF), reason=texts)
def test_websocket_frames_round_trip(data: bytes, text: bool, fin: bool, code: int, reason: str) -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent, websocket=True)
    agent.send_response(sid, 101, b"Switching Protocols", (), end_stream=False)
    agent.send_ws_message(sid, data, text=text, fin=fin)
    agent.send_ws_close(sid, code, reason)
    events = exchange(agent, relay)[1:]
    assert events == [WebSocketMessageReceived(sid, data, text, fin), WebSocketClosed(sid, code, reason)]


@given(code=st.sampled_from(list(ErrorCode)), reason=texts)
def test_reset_and_goaway_round_trip(code: ErrorCode, reason: str) -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent)
    agent.reset_stream(sid, code, reason)
    agent.send_goaway(code, reason)
    assert exchange(agent, relay) == [StreamReset(sid, code, reason), GoAway(code, reason)]


@given(payload=st.binary(min_size=8, max_size=8))
def test_ping_and_pong_round_trip(payload: bytes) -> None:
    relay, agent = handshaken()
    agent.ping(payload)
    assert exchange(agent, relay) == [PingReceived(payload)]
    assert exchange(relay, agent) == [PongReceived(payload)]


@given(increment=st.integers(1, 1 << 20))
def test_window_update_round_trips(increment: int) -> None:
    relay, agent = handshaken(agent_options={"initial_window": 1 << 20})
    sid = relay.open_request(b"POST", b"/", b"1.1", (), end_stream=False)
    relay.send_data(sid, b"\0" * increment)
    exchange(relay, agent)
    agent.acknowledge(sid, increment, flush=True)
    assert exchange(agent, relay) == [WindowUpdated(sid, increment)]


@given(method=tokens, target=st.binary(max_size=300), headers=fields, cut=st.integers(0, 10_000))
def test_truncated_request_payload_is_a_protocol_error(method: bytes, target: bytes, headers: tuple, cut: int) -> None:
    payload = f.encode_request(method, target, b"1.1", headers, "::1", "https")
    assert f.decode_request(payload)[5] == headers
    cut %= len(payload)
    with pytest.raises(ProtocolError):
        f.decode_request(payload[:cut])
    with pytest.raises(ProtocolError):
        f.decode_request(payload + b"\0")


@given(headers=fields, cut=st.integers(0, 10_000))
def test_truncated_response_payload_is_a_protocol_error(headers: tuple, cut: int) -> None:
    payload = f.encode_response(200, b"OK", b"1.1", headers)
    assert f.decode_response(payload) == (200, b"1.1", b"OK", headers)
    cut %= len(payload)
    with pytest.raises(ProtocolError):
        f.decode_response(payload[:cut])


def test_unknown_frame_types_are_skipped() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent)
    agent.send_response(sid, 200, b"OK", (), end_stream=True)
    stream = f.frame(0x7F, 0xFF, 12345, b"from the future") + agent.data_to_send() + f.frame(0xEE, 0, 0, b"")
    [response] = relay.receive_data(stream)
    assert isinstance(response, ResponseReceived)


def test_unknown_flags_are_ignored() -> None:
    relay, agent = handshaken()
    sid = relay.open_request(b"POST", b"/", b"1.1", (), end_stream=False)
    exchange(relay, agent)
    assert agent.receive_data(f.frame(f.DATA, 0xF0, sid, b"x")) == [DataReceived(sid, b"x", False)]


def test_oversized_field_is_refused_before_anything_is_queued() -> None:
    relay, agent = handshaken()
    with pytest.raises(ValueError, match="too long"):
        relay.open_request(b"M" * 70_000, b"/", b"1.1", (), end_stream=True)
    assert relay.data_to_send() == b"" and relay.open_streams == 0


def test_head_larger_than_the_peer_head_limit_is_refused_locally() -> None:
    relay, agent = handshaken(agent_options={"max_head_size": 4096})
    big = ((b"x-big", b"v" * 5000),)
    with pytest.raises(ProtocolError, match="exceeds the peer's limit of 4096") as info:
        relay.open_request(b"GET", b"/", b"1.1", big, end_stream=True)
    assert info.value.code == ErrorCode.TOO_LARGE
    assert relay.data_to_send() == b"" and relay.open_streams == 0
    assert open_get(relay, agent) == 1
