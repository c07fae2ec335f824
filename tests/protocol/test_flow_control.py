"""Per-stream flow control: windows, batched WINDOW_UPDATEs, violations."""

from __future__ import annotations

import pytest

from devtunnel import native
from devtunnel.errors import FlowControlError, ProtocolError
from devtunnel.protocol import DataReceived, RelayConnection, WindowUpdated
from devtunnel.protocol import frames as f
from tests.protocol.pairs import exchange, handshaken

WINDOW = 8192


def post_pair() -> tuple:
    relay, agent = handshaken(relay_options={"initial_window": WINDOW}, agent_options={"initial_window": WINDOW})
    sid = relay.open_request(b"POST", b"/upload", b"1.1", (), end_stream=False)
    exchange(relay, agent)
    return relay, agent, sid


def test_sender_may_use_exactly_the_window_and_not_one_byte_more() -> None:
    relay, agent, sid = post_pair()
    relay.send_data(sid, b"a" * WINDOW)
    assert relay.send_window(sid) == 0
    with pytest.raises(FlowControlError, match="1 bytes exceed the send window of 0"):
        relay.send_data(sid, b"b")
    assert [len(e.data) for e in exchange(relay, agent)] == [WINDOW]


def test_a_refused_send_queues_nothing() -> None:
    relay, agent, sid = post_pair()
    with pytest.raises(FlowControlError):
        relay.send_data(sid, b"a" * (WINDOW + 1), end_stream=True)
    assert relay.data_to_send() == b""
    relay.send_data(sid, b"a", end_stream=True)
    assert exchange(relay, agent) == [DataReceived(sid, b"a", True)]


def test_window_update_is_batched_until_half_the_window_is_acknowledged() -> None:
    relay, agent, sid = post_pair()
    relay.send_data(sid, b"x" * WINDOW)
    exchange(relay, agent)
    agent.acknowledge(sid, WINDOW // 2 - 1)
    assert agent.data_to_send() == b""
    agent.acknowledge(sid, 1)
    assert exchange(agent, relay) == [WindowUpdated(sid, WINDOW // 2)]
    assert relay.send_window(sid) == WINDOW // 2


def test_flush_sends_small_acknowledgements_at_once() -> None:
    relay, agent, sid = post_pair()
    relay.send_data(sid, b"x" * 100)
    exchange(relay, agent)
    agent.acknowledge(sid, 40)
    agent.acknowledge(sid, 60, flush=True)
    assert exchange(agent, relay) == [WindowUpdated(sid, 100)]
    agent.acknowledge(sid, 0, flush=True)  # nothing pending: nothing sent
    assert agent.data_to_send() == b""


def test_window_refills_so_a_large_body_flows_through_a_small_window() -> None:
    relay, agent, sid = post_pair()
    body = bytes(range(256)) * 200  # 51,200 bytes through an 8 KiB window
    received = bytearray()
    view = memoryview(body)
    while view:
        n = min(relay.send_window(sid), len(view))
        assert n > 0, "sender stalled with an empty window"
        relay.send_data(sid, bytes(view[:n]), end_stream=n == len(view))
        view = view[n:]
        for event in exchange(relay, agent):
            received += event.data
            agent.acknowledge(sid, len(event.data))
        exchange(agent, relay)
    assert bytes(received) == body


def test_receiving_more_than_the_window_is_a_flow_control_error() -> None:
    relay, agent, sid = post_pair()
    agent.receive_data(f.frame(f.DATA, 0, sid, b"x" * WINDOW))
    with pytest.raises(FlowControlError, match="1 bytes of DATA exceed the window of 0"):
        agent.receive_data(f.frame(f.DATA, 0, sid, b"x"))


def test_websocket_messages_consume_the_window_too() -> None:
    relay, agent = handshaken(agent_options={"initial_window": WINDOW})
    sid = relay.open_request(b"GET", b"/ws", b"1.1", (), end_stream=True, websocket=True)
    exchange(relay, agent)
    agent.send_response(sid, 101, b"Switching Protocols", (), end_stream=False)
    exchange(agent, relay)
    relay.send_ws_message(sid, b"m" * (WINDOW - 1), text=False)
    with pytest.raises(FlowControlError):
        relay.send_ws_message(sid, b"mm", text=False)
    exchange(relay, agent)
    with pytest.raises(FlowControlError, match="WS_MESSAGE exceed the window of 1"):
        agent.receive_data(f.frame(f.WS_MESSAGE, f.FIN, sid, b"mm"))


def test_acknowledging_more_than_was_received_is_refused() -> None:
    relay, agent, sid = post_pair()
    relay.send_data(sid, b"x" * 10)
    exchange(relay, agent)
    with pytest.raises(ValueError, match="only 10 are unacknowledged"):
        agent.acknowledge(sid, 11)
    with pytest.raises(ValueError, match="negative"):
        agent.acknowledge(sid, -1)


def test_acknowledging_a_finished_or_unknown_stream_sends_nothing() -> None:
    relay, agent, sid = post_pair()
    relay.send_data(sid, b"x" * WINDOW, end_stream=True)
    exchange(relay, agent)
    agent.acknowledge(sid, WINDOW, flush=True)  # the relay sends nothing more on this stream
    agent.acknowledge(12345, 10)
    assert agent.data_to_send() == b""


def test_window_update_of_zero_is_a_protocol_error() -> None:
    relay, agent, sid = post_pair()
    with pytest.raises(ProtocolError, match="WINDOW_UPDATE of 0 bytes"):
        relay.receive_data(f.frame(f.WINDOW_UPDATE, 0, sid, b"\0\0\0\0"))


def test_window_update_beyond_two_to_the_31_is_a_flow_control_error() -> None:
    relay, agent, sid = post_pair()
    with pytest.raises(FlowControlError, match="beyond 2"):
        relay.receive_data(f.frame(f.WINDOW_UPDATE, 0, sid, (1 << 31).to_bytes(4, "big")))


def test_window_update_must_carry_four_bytes() -> None:
    relay, agent, sid = post_pair()
    with pytest.raises(ProtocolError, match="4 bytes"):
        relay.receive_data(f.frame(f.WINDOW_UPDATE, 0, sid, b"\0\0\1"))


def test_data_larger_than_the_peer_frame_size_is_split_and_reassembled() -> None:
    relay, agent = handshaken(relay_options={"max_frame_size": 1024})
    sid = relay.open_request(b"GET", b"/", b"1.1", (), end_stream=True)
    exchange(relay, agent)
    agent.send_response(sid, 200, b"OK", (), end_stream=False)
    body = bytes(range(256)) * 10
    agent.send_data(sid, body, end_stream=True)
    events = exchange(agent, relay)[1:]
    assert [len(e.data) for e in events] == [1024, 1024, 512]
    assert [e.end_stream for e in events] == [False, False, True]
    assert b"".join(e.data for e in events) == body


def test_a_huge_window_announced_by_the_peer_is_capped_at_our_max_send_window() -> None:
    relay, agent = handshaken(
        relay_options={"max_send_window": WINDOW}, agent_options={"initial_window": f.MAX_WINDOW}
    )
    assert relay.new_stream_window == WINDOW
    sid = relay.open_request(b"POST", b"/upload", b"1.1", (), end_stream=False)
    exchange(relay, agent)
    assert relay.send_window(sid) == WINDOW
    with pytest.raises(FlowControlError):
        relay.send_data(sid, b"a" * (WINDOW + 1))
    relay.send_data(sid, b"a" * WINDOW)
    exchange(relay, agent)
    # Credit beyond the cap is not kept either: the window never grows past it.
    relay.receive_data(f.frame(f.WINDOW_UPDATE, 0, sid, (WINDOW * 4).to_bytes(4, "big")))
    assert relay.send_window(sid) == WINDOW
    relay.receive_data(f.frame(f.WINDOW_UPDATE, 0, sid, (f.MAX_WINDOW - WINDOW).to_bytes(4, "big")))
    assert relay.send_window(sid) == WINDOW


def test_the_cap_applies_to_streams_the_agent_answers_too() -> None:
    relay, agent = handshaken(relay_options={"initial_window": f.MAX_WINDOW}, agent_options={"max_send_window": 4096})
    sid = relay.open_request(b"GET", b"/", b"1.1", (), end_stream=True)
    exchange(relay, agent)
    assert agent.send_window(sid) == 4096


@pytest.mark.parametrize("cap", [0, -1, 1 << 31])
def test_max_send_window_out_of_range_is_refused(cap: int) -> None:
    with pytest.raises(ValueError, match="max_send_window"):
        RelayConnection(max_send_window=cap)


def test_a_max_send_window_that_is_no_int_is_refused() -> None:
    """Only our own code gives it (``RelaySettings.max_window``: no option, settings file or peer
    sets it), typed ``int`` for mypy. Compiled with mypyc (devtunnel/native.py), the call itself
    refuses a float (TypeError) before the check in ``__init__`` runs; pure, the check does."""
    compiled = "devtunnel.protocol.connection" in native.compiled_modules()
    with pytest.raises(TypeError if compiled else ValueError, match="int"):
        RelayConnection(max_send_window=2.5)  # type: ignore[arg-type]


def test_queued_data_counts_payload_until_it_is_taken() -> None:
    relay, agent, sid = post_pair()
    assert relay.queued_data == 0
    relay.send_data(sid, b"x" * 3000)
    relay.send_data(sid, b"y" * 1000)
    assert relay.queued_data == 4000
    relay.data_to_send()
    assert relay.queued_data == 0
