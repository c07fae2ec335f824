"""The protocol is a byte stream: any split of the same bytes gives the same events."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from devtunnel.protocol import AgentConnection, Connection, Event, RelayConnection
from devtunnel.protocol.connection import ErrorCode

Deliver = Callable[[Connection, bytes], list[Event]]


def whole(conn: Connection, data: bytes) -> list[Event]:
    return conn.receive_data(data)


def conversation(deliver: Deliver) -> tuple[list[Event], list[Event], bytes, bytes]:
    """Run one complete session, handing every batch of bytes to ``deliver``.

    Returns the relay's events, the agent's events and the bytes sent each way.
    """
    relay = RelayConnection(max_frame_size=1024)
    agent = AgentConnection(max_frame_size=1024)
    relay_events: list[Event] = []
    agent_events: list[Event] = []
    wire = {"to_relay": bytearray(), "to_agent": bytearray()}

    def a2r() -> None:
        data = agent.data_to_send()
        wire["to_relay"] += data
        relay_events.extend(deliver(relay, data))

    def r2a() -> None:
        data = relay.data_to_send()
        wire["to_agent"] += data
        agent_events.extend(deliver(agent, data))

    agent.send_hello("tok", "split", {"n": 1})
    a2r()
    relay.send_welcome("split", "http://split.localhost")
    r2a()
    post = relay.open_request(
        b"POST", b"/upload?q=1", b"1.1", ((b"Host", b"split"), (b"X-A", b"\x00\xff")), end_stream=False, remote_addr="::1"
    )
    relay.send_data(post, bytes(range(256)) * 9, end_stream=True)
    ws = relay.open_request(b"GET", b"/ws", b"1.1", (), end_stream=True, websocket=True)
    relay.ping(b"pingpong")
    r2a()
    agent.send_response(post, 201, b"Created", ((b"Location", b"/x"),), end_stream=False)
    agent.send_data(post, b"done" * 700, end_stream=True)
    agent.send_response(ws, 101, b"Switching Protocols", (), end_stream=False)
    agent.send_ws_message(ws, "ünïcode".encode(), text=True)
    a2r()
    relay.acknowledge(ws, len("ünïcode".encode()), flush=True)
    relay.send_ws_message(ws, b"\x00" * 1500, text=False)
    relay.send_ws_close(ws, 1001, "going")
    relay.reset_stream(relay.open_request(b"GET", b"/gone", b"1.1", (), end_stream=True), ErrorCode.CANCEL, "cancel")
    r2a()
    agent.send_ws_close(ws, 1000)
    agent.send_goaway(ErrorCode.NO_ERROR, "bye")
    a2r()
    return relay_events, agent_events, bytes(wire["to_relay"]), bytes(wire["to_agent"])


RELAY_EVENTS, AGENT_EVENTS, TO_RELAY, TO_AGENT = conversation(whole)


def test_the_conversation_exercises_most_frame_types_both_ways() -> None:
    kinds = {type(e).__name__ for e in RELAY_EVENTS + AGENT_EVENTS}
    assert kinds >= {
        "Hello",
        "Welcome",
        "RequestReceived",
        "ResponseReceived",
        "DataReceived",
        "WebSocketMessageReceived",
        "WebSocketClosed",
        "PingReceived",
        "PongReceived",
        "StreamReset",
        "GoAway",
        "WindowUpdated",
    }


@settings(max_examples=200)
@given(data=st.data())
def test_any_split_of_the_bytes_gives_the_same_events(data: st.DataObject) -> None:
    def split(conn: Connection, chunk: bytes) -> list[Event]:
        cuts = sorted(data.draw(st.lists(st.integers(0, len(chunk)), max_size=12)))
        events: list[Event] = []
        start = 0
        for cut in [*cuts, len(chunk)]:
            events.extend(conn.receive_data(chunk[start:cut]))
            start = cut
        return events

    relay_events, agent_events, to_relay, to_agent = conversation(split)
    assert (relay_events, agent_events) == (RELAY_EVENTS, AGENT_EVENTS)
    assert (to_relay, to_agent) == (TO_RELAY, TO_AGENT)


def test_one_byte_at_a_time_gives_the_same_events() -> None:
    def bytewise(conn: Connection, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        for i in range(len(chunk)):
            events.extend(conn.receive_data(chunk[i : i + 1]))
        return events

    assert conversation(bytewise)[:2] == (RELAY_EVENTS, AGENT_EVENTS)


def test_memoryview_and_bytearray_input_give_the_same_events() -> None:
    assert conversation(lambda conn, chunk: conn.receive_data(memoryview(chunk)))[:2] == (RELAY_EVENTS, AGENT_EVENTS)
    assert conversation(lambda conn, chunk: conn.receive_data(bytearray(chunk)))[:2] == (RELAY_EVENTS, AGENT_EVENTS)
