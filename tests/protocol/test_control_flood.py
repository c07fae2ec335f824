"""The protocol's bounds on a flood of tiny frames (HTTP/2's CVE-2019-9512, -9514, -9518): the
answers left unsent to a peer (``MAX_UNSENT_REPLIES``), and the frames handled per call
(``receive_slice``), which leave the rest of the bytes in ``backlog`` for the next call."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtunnel.errors import ProtocolError
from devtunnel.protocol import Event, GoAway, PingReceived, PongReceived, RelayConnection
from devtunnel.protocol import frames as f
from devtunnel.protocol.connection import MAX_UNSENT_REPLIES, ErrorCode
from tests.protocol.pairs import exchange, handshaken

REQUEST = f.frame(f.REQUEST, f.END_STREAM, 0, f.encode_request(b"GET", b"/", b"1.1", (), "", "http"))


def pings(count: int, start: int = 0) -> bytes:
    return b"".join(f.frame(f.PING, 0, 0, b"%08d" % i) for i in range(start, start + count))


def requests(first_id: int, count: int) -> bytes:
    """``count`` REQUEST frames on odd ids from ``first_id`` (an agent refuses those past its limit)."""
    header = f.HEADER.unpack(REQUEST[:9])
    payload = REQUEST[9:]
    return b"".join(f.HEADER.pack(header[0], header[1], first_id + 2 * i) + payload for i in range(count))


def payloads(events: list[Event]) -> list[bytes]:
    """The payloads of PING or PONG events (all of them must be)."""
    assert all(isinstance(e, (PingReceived, PongReceived)) for e in events), events
    return [e.payload for e in events]  # type: ignore[attr-defined]


def test_answers_the_peer_does_not_take_fail_the_connection_past_the_limit_never_when_taken() -> None:
    relay, agent = handshaken()
    for start in range(0, 3 * MAX_UNSENT_REPLIES, MAX_UNSENT_REPLIES):  # taken after each batch
        assert len(relay.receive_data(pings(MAX_UNSENT_REPLIES, start))) == MAX_UNSENT_REPLIES
        assert payloads(exchange(relay, agent)) == [b"%08d" % i for i in range(start, start + MAX_UNSENT_REPLIES)]
    relay.receive_data(pings(MAX_UNSENT_REPLIES))  # not taken, up to the limit: answered
    with pytest.raises(ProtocolError, match="too many control frames unanswered") as failure:
        relay.receive_data(pings(1))
    assert failure.value.code == ErrorCode.PROTOCOL_ERROR
    assert f"more than {MAX_UNSENT_REPLIES} wait to be sent" in str(failure.value)
    # The PONGs that waited are dropped: the GOAWAY saying why is all that is left to send.
    [goaway] = exchange(relay, agent)
    assert isinstance(goaway, GoAway) and goaway.code == ErrorCode.PROTOCOL_ERROR
    assert goaway.reason.startswith("too many control frames unanswered")
    assert not relay.wants_to_send


def test_the_agent_s_refusals_of_streams_count_as_answers() -> None:
    relay, agent = handshaken(agent_options={"max_streams": 1})
    agent.receive_data(requests(1, 1 + MAX_UNSENT_REPLIES))  # one accepted, the rest refused
    with pytest.raises(ProtocolError, match="too many control frames unanswered"):
        agent.receive_data(requests(3 + 2 * MAX_UNSENT_REPLIES, 1))


def test_a_slice_handles_the_frames_starting_in_it_and_leaves_the_rest_for_the_next_call() -> None:
    relay, agent = handshaken(relay_options={"receive_slice": 170})
    events = relay.receive_data(pings(25))  # 17 bytes each: ten start in the first 170 bytes
    assert payloads(events) == [b"%08d" % i for i in range(10)]
    assert relay.backlog == 15 * 17
    assert relay.buffered == 0
    events = relay.receive_data(b"")
    assert len(events) == 10 and relay.backlog == 5 * 17
    assert len(relay.receive_data(b"")) == 5 and relay.backlog == 0
    assert relay.receive_data(b"") == []
    assert payloads(exchange(relay, agent)) == [b"%08d" % i for i in range(25)]


def test_a_frame_starting_in_a_slice_is_handled_whole() -> None:
    relay, agent = handshaken(relay_options={"receive_slice": 9})
    stream_id = relay.open_request(b"POST", b"/", b"1.1", (), end_stream=False)
    exchange(relay, agent)
    relay.receive_data(f.frame(f.RESPONSE, 0, stream_id, f.encode_response(200, b"OK", b"1.1", ())))
    body = f.frame(f.DATA, 0, stream_id, b"x" * 5000)
    events = relay.receive_data(body + body)
    assert [len(e.data) for e in events] == [5000]  # type: ignore[attr-defined]
    assert relay.backlog == len(body)
    assert [len(e.data) for e in relay.receive_data(b"")] == [5000]  # type: ignore[attr-defined]


def test_bytes_fed_while_a_backlog_waits_come_after_it() -> None:
    relay, _ = handshaken(relay_options={"receive_slice": 34})
    first = relay.receive_data(pings(5))
    second = relay.receive_data(pings(5, 5))
    rest: list[Event] = []
    while relay.backlog:
        rest += relay.receive_data(b"")
    assert payloads(first + second + rest) == [b"%08d" % i for i in range(10)]


def test_a_failure_drops_the_backlog() -> None:
    relay, _ = handshaken(relay_options={"receive_slice": 17})
    relay.receive_data(pings(1) + f.frame(f.PING, 0, 3, b"12345678") + pings(100))
    with pytest.raises(ProtocolError, match="PING frame must carry 8 bytes on stream 0"):
        relay.receive_data(b"")
    assert relay.backlog == 0


def test_receive_slice_is_checked() -> None:
    for bad in (0, 8):
        with pytest.raises(ValueError, match="receive_slice"):
            RelayConnection(receive_slice=bad)
    for wrong in (1.5, "64"):  # compiled (mypyc), the call's own type check refuses it first
        with pytest.raises((ValueError, TypeError)):
            RelayConnection(receive_slice=wrong)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=9, max_value=300),
    cuts=st.lists(st.integers(min_value=1, max_value=17 * 40 - 1), max_size=6, unique=True),
    drain=st.booleans(),
)
def test_slices_and_splits_give_the_events_and_answers_of_one_call(size: int, cuts: list[int], drain: bool) -> None:
    data = pings(40)
    whole, _ = handshaken()
    expected = whole.receive_data(data)
    sliced, _ = handshaken(relay_options={"receive_slice": size})
    got: list[Event] = []
    bounds = [0, *sorted(cuts), len(data)]
    for start, end in zip(bounds, bounds[1:]):
        got += sliced.receive_data(memoryview(data)[start:end])
        while drain and sliced.backlog:
            got += sliced.receive_data(b"")
    while sliced.backlog:
        got += sliced.receive_data(b"")
    assert got == expected
    assert all(isinstance(e, PingReceived) for e in got)
    assert sliced.data_to_send() == whole.data_to_send()
