"""Stream life: reset races, concurrency limits, WebSocket streams, forgetting closed streams."""

from __future__ import annotations

import pytest

from devtunnel.errors import ProtocolError, StreamClosedError
from devtunnel.protocol import (
    DataReceived,
    ErrorCode,
    ResponseReceived,
    StreamReset,
    StreamState,
    WebSocketClosed,
    WebSocketMessageReceived,
    WindowUpdated,
)
from devtunnel.protocol import frames as f
from tests.protocol.pairs import exchange, handshaken, open_get


def test_reset_reaches_the_peer_and_closes_the_stream_on_both_ends() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent)
    relay.reset_stream(sid, ErrorCode.CANCEL, "client went away")
    assert exchange(relay, agent) == [StreamReset(sid, ErrorCode.CANCEL, "client went away")]
    assert relay.open_streams == agent.open_streams == 0
    assert agent.state(sid) is StreamState.CLOSED
    with pytest.raises(StreamClosedError):
        agent.send_response(sid, 200, b"OK", (), end_stream=True)


def test_frames_crossing_our_reset_are_ignored() -> None:
    relay, agent = handshaken()
    sid = relay.open_request(b"POST", b"/", b"1.1", (), end_stream=False)
    exchange(relay, agent)
    # The agent answers while the relay, not knowing, abandons the stream.
    agent.send_response(sid, 200, b"OK", (), end_stream=False)
    agent.send_data(sid, b"partial")
    in_flight = agent.data_to_send()
    relay.reset_stream(sid, ErrorCode.CANCEL)
    assert relay.receive_data(in_flight) == []
    # And the other way: the relay's body and RESET reach an agent that reset the stream too.
    relay2, agent2 = handshaken()
    sid2 = relay2.open_request(b"POST", b"/", b"1.1", (), end_stream=False)
    exchange(relay2, agent2)
    relay2.send_data(sid2, b"body")
    relay2.reset_stream(sid2, ErrorCode.CANCEL)
    agent2.reset_stream(sid2, ErrorCode.LOCAL_REFUSED)
    assert exchange(relay2, agent2) == []
    assert exchange(agent2, relay2) == []


def test_window_update_for_a_stream_that_just_closed_is_ignored() -> None:
    relay, agent = handshaken()
    sid = relay.open_request(b"POST", b"/", b"1.1", (), end_stream=False)
    relay.send_data(sid, b"x" * 600_000, end_stream=True)
    exchange(relay, agent)
    agent.send_response(sid, 200, b"OK", (), end_stream=True)
    exchange(agent, relay)
    assert relay.open_streams == 0
    relay.receive_data(f.frame(f.WINDOW_UPDATE, 0, sid, (600_000).to_bytes(4, "big")))
    assert relay.receive_data(f.frame(f.RESET, 0, sid, b"\0\0\0\2")) == []


def test_data_on_a_stream_closed_without_our_reset_is_refused() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent)
    agent.send_response(sid, 200, b"OK", (), end_stream=True)
    exchange(agent, relay)
    with pytest.raises(StreamClosedError, match=f"DATA frame on closed stream {sid}"):
        relay.receive_data(f.frame(f.DATA, 0, sid, b"x"))


def test_reset_for_a_stream_never_opened_is_a_protocol_error() -> None:
    relay, agent = handshaken()
    with pytest.raises(ProtocolError, match="never opened"):
        agent.receive_data(f.frame(f.RESET, 0, 5, b"\0\0\0\1"))


def test_relay_refuses_to_open_more_streams_than_allowed() -> None:
    relay, agent = handshaken(relay_options={"max_streams": 3})
    for _ in range(3):
        open_get(relay, agent)
    with pytest.raises(ProtocolError, match="already carries 3 streams") as info:
        relay.open_request(b"GET", b"/", b"1.1", (), end_stream=True)
    assert info.value.code == ErrorCode.REFUSED_STREAM
    assert relay.data_to_send() == b""
    agent.send_response(1, 200, b"OK", (), end_stream=True)
    exchange(agent, relay)
    assert open_get(relay, agent) == 7


def test_relay_respects_the_limit_the_agent_announced() -> None:
    relay, agent = handshaken(agent_options={"max_streams": 1})
    open_get(relay, agent)
    with pytest.raises(ProtocolError, match="already carries 1 streams"):
        relay.open_request(b"GET", b"/", b"1.1", (), end_stream=True)


def test_agent_going_away_refuses_new_requests_with_a_reset() -> None:
    relay, agent = handshaken()
    relay.open_request(b"POST", b"/", b"1.1", (), end_stream=False)
    relay.send_data(1, b"body")
    agent.send_goaway(ErrorCode.NO_ERROR, "stopping")
    assert exchange(relay, agent) == []  # the request crossed the GOAWAY: refused, body ignored
    events = exchange(agent, relay)
    assert events[1] == StreamReset(1, ErrorCode.REFUSED_STREAM, "")
    assert relay.open_streams == agent.open_streams == 0


def test_closed_streams_are_forgotten() -> None:
    relay, agent = handshaken(relay_options={"max_streams": 4})
    for _ in range(2000):
        sid = open_get(relay, agent)
        agent.send_response(sid, 200, b"OK", (), end_stream=False)
        agent.send_data(sid, b"ok", end_stream=True)
        exchange(agent, relay)
    assert relay.open_streams == agent.open_streams == 0
    assert not relay._streams and not agent._streams


def test_remembered_resets_stay_bounded() -> None:
    relay, agent = handshaken(relay_options={"max_streams": 4})
    for _ in range(2000):
        sid = open_get(relay, agent)
        relay.reset_stream(sid, ErrorCode.CANCEL)
        exchange(relay, agent)
    assert len(relay._reset_ids) <= 256


def test_websocket_stream_upgrades_exchanges_messages_and_closes() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent, websocket=True)
    agent.send_response(sid, 101, b"Switching Protocols", ((b"upgrade", b"websocket"),), end_stream=False)
    [head] = exchange(agent, relay)
    assert isinstance(head, ResponseReceived) and head.status == 101
    assert relay.state(sid) is StreamState.OPEN
    relay.send_ws_message(sid, "héllo".encode(), text=True)
    relay.send_ws_message(sid, b"\x00\x01", text=False, fin=False)
    relay.send_ws_message(sid, b"\x02", text=False)
    assert exchange(relay, agent) == [
        WebSocketMessageReceived(sid, "héllo".encode(), True, True),
        WebSocketMessageReceived(sid, b"\x00\x01", False, False),
        WebSocketMessageReceived(sid, b"\x02", False, True),
    ]
    agent.send_ws_message(sid, b"pong", text=True)
    agent.send_ws_close(sid, 1000, "bye")
    assert exchange(agent, relay) == [WebSocketMessageReceived(sid, b"pong", True, True), WebSocketClosed(sid, 1000, "bye")]
    assert relay.state(sid) is StreamState.HALF_CLOSED_REMOTE
    with pytest.raises(StreamClosedError):
        agent.send_ws_message(sid, b"late", text=True)
    relay.send_ws_close(sid, 1000)
    assert exchange(relay, agent) == [WebSocketClosed(sid, 1000, "")]
    assert relay.open_streams == agent.open_streams == 0


def test_refused_websocket_upgrade_is_a_plain_response() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent, websocket=True)
    agent.send_response(sid, 403, b"Forbidden", (), end_stream=False)
    agent.send_data(sid, b"no", end_stream=True)
    events = exchange(agent, relay)
    assert events[1] == DataReceived(sid, b"no", True)
    assert relay.open_streams == 0


def test_large_websocket_message_is_fragmented_to_the_peer_frame_size() -> None:
    relay, agent = handshaken(agent_options={"max_frame_size": 1024})
    sid = open_get(relay, agent, websocket=True)
    agent.send_response(sid, 101, b"Switching Protocols", (), end_stream=False)
    exchange(agent, relay)
    relay.send_ws_message(sid, b"t" * 2500, text=True)
    events = exchange(relay, agent)
    assert [(len(e.data), e.text, e.fin) for e in events] == [(1024, True, False), (1024, True, False), (452, True, True)]


def test_ws_close_code_must_fit_sixteen_bits() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent, websocket=True)
    with pytest.raises(ValueError, match="16 bits"):
        agent.send_ws_close(sid, 70000)


def test_window_updated_event_reports_the_increment() -> None:
    relay, agent = handshaken()
    sid = relay.open_request(b"POST", b"/", b"1.1", (), end_stream=False)
    relay.send_data(sid, b"x" * 10)
    exchange(relay, agent)
    agent.acknowledge(sid, 10, flush=True)
    assert exchange(agent, relay) == [WindowUpdated(sid, 10)]


def test_ping_is_answered_automatically_with_the_same_payload() -> None:
    relay, agent = handshaken()
    relay.ping(b"abcdefgh")
    [ping] = exchange(relay, agent)
    assert ping.payload == b"abcdefgh"
    [pong] = exchange(agent, relay)
    assert pong.payload == b"abcdefgh"
    with pytest.raises(ValueError, match="exactly 8 bytes"):
        relay.ping(b"short")


def test_stream_ids_running_out_refuses_new_streams() -> None:
    relay, agent = handshaken()
    relay._last_stream_id = f.MAX_STREAM_ID  # as after a billion requests
    with pytest.raises(ProtocolError, match="stream ids are exhausted") as info:
        relay.open_request(b"GET", b"/", b"1.1", (), end_stream=True)
    assert info.value.code == ErrorCode.REFUSED_STREAM


def test_a_bad_frame_after_good_ones_fails_the_whole_call() -> None:
    relay, agent = handshaken()
    sid = open_get(relay, agent)
    agent.send_response(sid, 200, b"OK", (), end_stream=False)
    data = agent.data_to_send() + f.frame(f.DATA, 0, 2, b"x")
    with pytest.raises(ProtocolError, match="never opened"):
        relay.receive_data(data)
    with pytest.raises(ProtocolError, match="already failed"):
        relay.receive_data(f.frame(f.PING, 0, 0, b"\0" * 8))


def test_a_websocket_request_with_a_body_is_refused_on_both_sides() -> None:
    # Body bytes the relay sent before it saw the agent's 101 would reach a stream that carries
    # WebSocket messages only, and the agent would fail the connection: such a stream never opens.
    relay, agent = handshaken()
    queued = len(relay._out)
    with pytest.raises(ProtocolError, match="carries no body") as refused:
        relay.open_request(b"GET", b"/", b"1.1", ((b"host", b"demo.localhost"),), end_stream=False, websocket=True)
    assert refused.value.code == ErrorCode.PROTOCOL_ERROR and len(relay._out) == queued
    assert open_get(relay, agent) == 1  # the connection goes on

    # A hostile relay writing the frame itself: the agent refuses it, whatever comes after.
    payload = f.encode_request(b"GET", b"/", b"1.1", ((b"host", b"demo.localhost"),), "", "http")
    with pytest.raises(ProtocolError, match="a WebSocket request with a body"):
        agent.receive_data(f.frame(f.REQUEST, f.WEBSOCKET, 3, payload))
