"""Hostile input: arbitrary bytes give events or ProtocolError, never anything else."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtunnel.errors import ProtocolError
from devtunnel.protocol import AgentConnection, Connection, RelayConnection, Role
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol import frames as f
from tests.protocol.pairs import handshaken, open_get

MAX_FRAME = 2048
MAX_HEAD = 1024
BUFFER_LIMIT = max(MAX_FRAME, MAX_HEAD) + f.HEADER_SIZE
OPTIONS = {"max_frame_size": MAX_FRAME, "max_head_size": MAX_HEAD, "initial_window": 4096, "max_streams": 4}


def feed(conn: Connection, chunks: list[bytes]) -> None:
    """Feed chunks; the only acceptable failure is ProtocolError, and the buffer stays bounded."""
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            assert conn.buffered <= BUFFER_LIMIT
            conn.data_to_send()
    except ProtocolError:
        conn.data_to_send()  # the GOAWAY queued on failure encodes without error


ROLES: dict[Role, type[RelayConnection] | type[AgentConnection]] = {Role.RELAY: RelayConnection, Role.AGENT: AgentConnection}


def fresh(role: Role) -> Connection:
    conn = ROLES[role](**OPTIONS)
    if isinstance(conn, AgentConnection):
        conn.send_hello("tok", "fuzz")
        conn.data_to_send()
    return conn


def busy_pair() -> tuple[RelayConnection, AgentConnection]:
    """A handshaken pair with an open HTTP stream (1), a WebSocket stream (3) and a reset one (5)."""
    relay, agent = handshaken(OPTIONS, OPTIONS)
    open_get(relay, agent, end_stream=False)
    open_get(relay, agent, websocket=True)
    agent.send_response(3, 101, b"Switching Protocols", (), end_stream=False)
    open_get(relay, agent)
    relay.reset_stream(5, ErrorCode.CANCEL)
    agent.reset_stream(5, ErrorCode.CANCEL)
    relay.data_to_send()
    agent.data_to_send()
    return relay, agent


handshake_payloads = st.sampled_from(
    [
        json.dumps({"versions": [1], "token": "t", "name": None}).encode(),
        json.dumps({"version": 1, "name": "n", "url": "u", "info": {"max_frame_size": 1024}}).encode(),
    ]
)
few_fields = st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=6)), max_size=3).map(tuple)
heads = st.builds(
    f.encode_request, st.binary(max_size=8), st.binary(max_size=8), st.just(b"1.1"), few_fields, st.just(""), st.just("http")
) | st.builds(f.encode_response, st.integers(100, 999), st.binary(max_size=4), st.just(b"1.1"), few_fields)


def damage(payload: bytes, cut: int, flip: int) -> bytes:
    """Truncate a valid payload, or change one of its bytes."""
    if not payload or cut % 2:
        return payload[: cut % (len(payload) + 1)]
    i = flip % len(payload)
    return payload[:i] + bytes([payload[i] ^ (cut & 0xFF or 1)]) + payload[i + 1 :]


payloads = (
    st.binary(max_size=64)
    | handshake_payloads
    | heads
    | st.builds(damage, heads | handshake_payloads, st.integers(0, 1 << 16), st.integers(0, 1 << 16))
)
frames = st.builds(
    f.frame,
    st.integers(0, 16),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 7, 9, (1 << 31) - 1, 1 << 31]),
    payloads,
)
raw_headers = st.builds(
    lambda length, ftype, flags, sid: length.to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big"),
    st.integers(0, (1 << 24) - 1),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, (1 << 32) - 1),
)


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted(c % (len(stream) + 1) for c in cuts)
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=4000), cuts=st.lists(st.integers(0, 1 << 16), max_size=10), role=st.sampled_from(Role))
def test_arbitrary_bytes_to_a_fresh_connection(data: bytes, cuts: list[int], role: Role) -> None:
    feed(fresh(role), chunked(data, cuts))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(frames | raw_headers | st.binary(max_size=20), max_size=20).map(b"".join),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=10),
    role=st.sampled_from(Role),
)
def test_frame_shaped_garbage_to_a_fresh_connection(stream: bytes, cuts: list[int], role: Role) -> None:
    feed(fresh(role), chunked(stream, cuts))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(frames | raw_headers | st.binary(max_size=20), max_size=20).map(b"".join),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=10),
    to_relay=st.booleans(),
)
def test_frame_shaped_garbage_to_a_connection_with_open_streams(stream: bytes, cuts: list[int], to_relay: bool) -> None:
    relay, agent = busy_pair()
    feed(relay if to_relay else agent, chunked(stream, cuts))


@given(length=st.integers(MAX_FRAME + 1, (1 << 24) - 1), ftype=st.sampled_from([f.DATA, f.WS_MESSAGE, 0x55]))
def test_oversized_frame_fails_at_its_header_without_buffering(length: int, ftype: int) -> None:
    relay, agent = busy_pair()
    header = f.header(ftype, 0, 1, length)
    try:
        agent.receive_data(header)
    except ProtocolError as exc:
        assert "more than the limit" in str(exc)
    else:
        raise AssertionError("an oversized frame header was accepted")
    assert agent.buffered == 0


def test_oversized_head_fails_at_its_header() -> None:
    relay, agent = busy_pair()
    try:
        agent.receive_data(f.header(f.REQUEST, 0, 7, MAX_HEAD + 1)[:9])
    except ProtocolError as exc:
        assert f"limit of {MAX_HEAD}" in str(exc)
    else:
        raise AssertionError("an oversized head was accepted")


def test_reserved_stream_id_bit_is_a_protocol_error() -> None:
    relay, agent = busy_pair()
    try:
        agent.receive_data(f.header(f.DATA, 0, (1 << 31) | 1, 0))
    except ProtocolError as exc:
        assert "reserved high bit" in str(exc)
    else:
        raise AssertionError("a stream id with the reserved bit was accepted")


@settings(max_examples=300)
@given(
    ftype=st.integers(0, 16),
    flags=st.integers(0, 255),
    stream_id=st.sampled_from([0, 1, 3, 5, 7]),
    payload=payloads,
    to_relay=st.booleans(),
)
def test_any_single_frame_to_a_connection_with_open_streams(
    ftype: int, flags: int, stream_id: int, payload: bytes, to_relay: bool
) -> None:
    relay, agent = busy_pair()
    feed(relay if to_relay else agent, [f.frame(ftype, flags, stream_id, payload)])


@settings(max_examples=300)
@given(
    fields=few_fields,
    cut=st.integers(0, 1 << 16),
    flip=st.integers(0, 1 << 16),
)
def test_damaged_heads_are_protocol_errors_or_heads(fields: tuple, cut: int, flip: int) -> None:
    relay, agent = busy_pair()
    request = damage(f.encode_request(b"GET", b"/", b"1.1", fields, "", "http"), cut, flip)
    feed(agent, [f.frame(f.REQUEST, 0, 7, request)])
    response = damage(f.encode_response(200, b"OK", b"1.1", fields), cut, flip)
    feed(relay, [f.frame(f.RESPONSE, 0, 1, response)])


def test_a_large_frame_trickling_in_is_held_in_one_buffer_of_its_size() -> None:
    relay, agent = busy_pair()
    frame = f.frame(f.DATA, 0, 1, bytes(range(256)) * 8)  # 2048 bytes, the limit
    held = []
    for i in range(len(frame) - 1):
        assert agent.receive_data(frame[i : i + 1]) == []
        held.append(agent.buffered)
    [event] = agent.receive_data(frame[-1:])
    assert event.data == bytes(range(256)) * 8
    assert held[:8] == [f.HEADER_SIZE] * 8 and set(held[8:]) == {len(frame)}
    assert agent.buffered == 0
