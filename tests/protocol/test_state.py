"""The stream state table, and the illegal transitions a Connection refuses."""

from __future__ import annotations

import itertools

import pytest

from devtunnel.errors import ProtocolError, StreamClosedError
from devtunnel.protocol import ErrorCode, StreamState
from devtunnel.protocol import frames as f
from devtunnel.protocol.state import FINISHED, TRANSITIONS, Action, Half, advance, stream_state
from tests.protocol.pairs import exchange, handshaken, open_get

ILLEGAL = [pair for pair in itertools.product(Half, Action) if pair not in TRANSITIONS]


@pytest.mark.parametrize(("half", "action"), ILLEGAL, ids=lambda x: x.value)
def test_every_transition_missing_from_the_table_raises(half: Half, action: Action) -> None:
    expected = StreamClosedError if half in FINISHED else ProtocolError
    with pytest.raises(expected, match=f"stream 5: we cannot send {action.value} when that side is {half.value}"):
        advance(half, action, 5, "we")


@pytest.mark.parametrize(("pair", "after"), TRANSITIONS.items(), ids=str)
def test_every_transition_in_the_table_is_taken(pair: tuple[Half, Action], after: Half) -> None:
    assert advance(*pair, 1, "we") is after


@pytest.mark.parametrize(
    ("local", "remote", "state"),
    [
        (Half.IDLE, Half.IDLE, StreamState.IDLE),
        (Half.BODY, Half.IDLE, StreamState.OPEN),
        (Half.WEBSOCKET, Half.WEBSOCKET, StreamState.OPEN),
        (Half.DONE, Half.IDLE, StreamState.HALF_CLOSED_LOCAL),
        (Half.BODY, Half.DONE, StreamState.HALF_CLOSED_REMOTE),
        (Half.WEBSOCKET, Half.CLOSED, StreamState.HALF_CLOSED_REMOTE),
        (Half.DONE, Half.DONE, StreamState.CLOSED),
        (Half.CLOSED, Half.CLOSED, StreamState.CLOSED),
    ],
)
def test_stream_state_follows_from_both_halves(local: Half, remote: Half, state: StreamState) -> None:
    assert stream_state(local, remote) is state


def test_stream_walks_open_half_closed_closed_on_both_ends() -> None:
    relay, agent = handshaken()
    assert relay.state(1) is StreamState.IDLE
    sid = relay.open_request(b"POST", b"/", b"1.1", (), end_stream=False)
    exchange(relay, agent)
    assert relay.state(sid) is agent.state(sid) is StreamState.OPEN
    relay.send_data(sid, b"body", end_stream=True)
    exchange(relay, agent)
    assert relay.state(sid) is StreamState.HALF_CLOSED_LOCAL
    assert agent.state(sid) is StreamState.HALF_CLOSED_REMOTE
    agent.send_response(sid, 204, b"No Content", (), end_stream=True)
    exchange(agent, relay)
    assert relay.state(sid) is agent.state(sid) is StreamState.CLOSED
    assert relay.open_streams == agent.open_streams == 0


def test_data_after_end_stream_is_refused_on_both_ends() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent)
    with pytest.raises(StreamClosedError, match="cannot send data"):
        relay.send_data(sid, b"late")
    with pytest.raises(StreamClosedError, match="the peer cannot send data when that side is done"):
        agent.receive_data(f.frame(f.DATA, 0, sid, b"late"))


def test_a_second_response_head_is_refused() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent)
    agent.send_response(sid, 200, b"OK", (), end_stream=False)
    with pytest.raises(ProtocolError, match="cannot send head"):
        agent.send_response(sid, 200, b"OK", (), end_stream=False)
    frame = agent.data_to_send()
    relay.receive_data(frame)
    with pytest.raises(ProtocolError, match="cannot send head"):
        relay.receive_data(frame)


def test_response_data_before_the_response_head_is_refused() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent)
    with pytest.raises(ProtocolError, match="cannot send data when that side is idle"):
        agent.send_data(sid, b"x")
    with pytest.raises(ProtocolError, match="cannot send data when that side is idle"):
        relay.receive_data(f.frame(f.DATA, 0, sid, b"x"))


def test_request_on_an_open_stream_is_refused() -> None:
    relay, agent = handshaken()
    relay.open_request(b"GET", b"/", b"1.1", (), end_stream=False)
    frame = relay.data_to_send()
    agent.receive_data(frame)
    with pytest.raises(ProtocolError, match="already open"):
        agent.receive_data(frame)


@pytest.mark.parametrize("stream_id", [2, 1, 0])
def test_request_ids_must_be_odd_and_increasing(stream_id: int) -> None:
    relay, agent = handshaken()
    open_get(relay, agent)  # stream 1, now closed on the agent side only when answered
    agent.send_response(1, 200, b"OK", (), end_stream=True)
    payload = f.encode_request(b"GET", b"/", b"1.1", (), "", "http")
    with pytest.raises(ProtocolError, match="odd, increasing"):
        agent.receive_data(f.frame(f.REQUEST, f.END_STREAM, stream_id, payload))


def test_stream_ids_are_odd_and_increasing() -> None:
    relay, agent = handshaken()
    ids = [open_get(relay, agent) for _ in range(4)]
    assert ids == [1, 3, 5, 7]


def test_responses_and_requests_only_travel_their_own_way() -> None:
    relay, agent = handshaken()
    assert not hasattr(agent, "open_request")  # only the relay opens streams
    assert not hasattr(relay, "send_response")  # only the agent sends responses
    with pytest.raises(ProtocolError, match="frame only it may send"):
        agent.receive_data(f.frame(f.RESPONSE, 0, 1, f.encode_response(200, b"OK", b"1.1", ())))


def test_stream_frames_on_stream_zero_and_connection_frames_on_streams_are_refused() -> None:
    for frame, match in [
        (f.frame(f.DATA, 0, 0, b"x"), "stream 0"),
        (f.frame(f.WINDOW_UPDATE, 0, 0, b"\0\0\0\1"), "never opened"),
        (f.frame(f.RESET, 0, 0, b"\0\0\0\1"), "never opened"),
        (f.frame(f.PING, 0, 1, b"\0" * 8), "PING"),
        (f.frame(f.PONG, 0, 1, b"\0" * 8), "PONG"),
        (f.frame(f.GOAWAY, 0, 1, b"\0" * 4), "GOAWAY"),
    ]:
        _, agent = handshaken()
        with pytest.raises(ProtocolError, match=match):
            agent.receive_data(frame)


def test_sending_on_a_closed_or_unknown_stream_raises_stream_closed() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent)
    agent.send_response(sid, 200, b"OK", (), end_stream=True)
    exchange(agent, relay)
    for conn in (relay, agent):
        with pytest.raises(StreamClosedError, match=f"stream {sid} is closed"):
            conn.send_data(sid, b"x")
        with pytest.raises(StreamClosedError, match=f"stream {sid} is closed"):
            conn.send_ws_message(sid, b"x", text=False)
        with pytest.raises(StreamClosedError, match="never opened"):
            conn.send_data(99, b"x")
        assert conn.send_window(sid) == 0
        conn.reset_stream(sid, ErrorCode.CANCEL)  # a no-op on a closed stream
        assert conn.data_to_send() == b""


def test_interim_responses_precede_the_final_one() -> None:
    relay, agent = handshaken()
    sid = relay.open_request(b"POST", b"/", b"1.1", ((b"expect", b"100-continue"),), end_stream=False)
    exchange(relay, agent)
    agent.send_response(sid, 100, b"Continue", (), end_stream=False)
    agent.send_response(sid, 103, b"Early Hints", ((b"link", b"</a.css>"),), end_stream=False)
    agent.send_response(sid, 200, b"OK", (), end_stream=False)
    statuses = [e.status for e in exchange(agent, relay)]
    assert statuses == [100, 103, 200]
    with pytest.raises(ProtocolError, match="interim 100 response cannot end the stream"):
        agent.send_response(sid, 100, b"Continue", (), end_stream=True)


def test_101_on_a_plain_stream_is_refused() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent)
    with pytest.raises(ProtocolError, match="did not ask for a WebSocket"):
        agent.send_response(sid, 101, b"Switching Protocols", (), end_stream=False)
    with pytest.raises(ProtocolError, match="did not ask for a WebSocket"):
        relay.receive_data(f.frame(f.RESPONSE, 0, sid, f.encode_response(101, b"", b"1.1", ())))


def test_websocket_messages_need_an_accepted_upgrade() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent, websocket=True)
    with pytest.raises(ProtocolError, match="cannot send ws_message when that side is idle"):
        agent.send_ws_message(sid, b"hi", text=True)
    with pytest.raises(StreamClosedError, match="cannot send ws_message when that side is done"):
        relay.send_ws_message(sid, b"hi", text=True)


def test_a_failed_send_leaves_the_stream_unchanged() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent)
    with pytest.raises(ValueError, match="3-digit"):
        agent.send_response(sid, 42, b"?", (), end_stream=True)
    assert agent.data_to_send() == b""
    agent.send_response(sid, 200, b"OK", (), end_stream=True)
    assert [e.status for e in exchange(agent, relay)] == [200]
