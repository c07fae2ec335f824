"""Random conversations through the public API: whatever the order of calls and deliveries,
bytes one side produces are never rejected by the other, and both ends agree on every stream."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from devtunnel.errors import DevtunnelError, FlowControlError, StreamClosedError
from devtunnel.protocol import (
    Connection,
    DataReceived,
    ErrorCode,
    Event,
    RequestReceived,
    StreamState,
    WebSocketMessageReceived,
)
from tests.protocol.pairs import handshaken

MIRROR = {
    StreamState.OPEN: StreamState.OPEN,
    StreamState.HALF_CLOSED_LOCAL: StreamState.HALF_CLOSED_REMOTE,
    StreamState.HALF_CLOSED_REMOTE: StreamState.HALF_CLOSED_LOCAL,
    StreamState.CLOSED: StreamState.CLOSED,
}


class Conversation(RuleBasedStateMachine):
    """A relay and an agent driven by random legal calls, with deliveries held back at random."""

    @initialize()
    def start(self) -> None:
        options = {"initial_window": 4096, "max_frame_size": 1024, "max_streams": 6}
        self.relay, self.agent = handshaken(options, options)
        self.ids: list[int] = []
        self.unacked: dict[tuple[str, int], int] = {}

    def _call(self, action: object, *args: object, **kwargs: object) -> None:
        """Make a call that may be refused locally; a refusal must queue nothing."""
        conn: Connection = action.__self__  # type: ignore[attr-defined]
        queued = len(conn._out)
        try:
            action(*args, **kwargs)  # type: ignore[operator]
        except (StreamClosedError, FlowControlError):
            assert len(conn._out) == queued
        except DevtunnelError as exc:
            assert getattr(exc, "code", None) == ErrorCode.PROTOCOL_ERROR, exc
            assert len(conn._out) == queued

    def _deliver(self, sender: Connection, receiver: Connection, side: str) -> list[Event]:
        events = receiver.receive_data(sender.data_to_send())  # must never raise
        for event in events:
            if isinstance(event, (DataReceived, WebSocketMessageReceived)) and event.data:
                key = (side, event.stream_id)
                self.unacked[key] = self.unacked.get(key, 0) + len(event.data)
            if isinstance(event, RequestReceived):
                assert event.stream_id in self.ids
        return events

    @rule(body=st.booleans(), websocket=st.booleans())
    def open_request(self, body: bool, websocket: bool) -> None:
        try:
            sid = self.relay.open_request(
                b"POST", b"/", b"1.1", ((b"k", b"v"),), end_stream=not body, websocket=websocket
            )
        except DevtunnelError as exc:
            if websocket and body:  # refused whatever the state: a WebSocket request has no body
                assert getattr(exc, "code", None) == ErrorCode.PROTOCOL_ERROR, exc
                assert "carries no body" in str(exc)
            else:
                assert getattr(exc, "code", None) == ErrorCode.REFUSED_STREAM
            return
        assert not (websocket and body), "a WebSocket request with a body was opened"
        self.ids.append(sid)

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), size=st.integers(0, 3000), end=st.booleans(), from_relay=st.booleans())
    def send_data(self, data: st.DataObject, size: int, end: bool, from_relay: bool) -> None:
        sid = data.draw(st.sampled_from(self.ids))
        conn = self.relay if from_relay else self.agent
        self._call(conn.send_data, sid, b"d" * size, end_stream=end)

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), status=st.sampled_from([100, 101, 200, 204, 404]), end=st.booleans())
    def respond(self, data: st.DataObject, status: int, end: bool) -> None:
        sid = data.draw(st.sampled_from(self.ids))
        self._call(self.agent.send_response, sid, status, b"R", (), end_stream=end)

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), size=st.integers(0, 2000), text=st.booleans(), from_relay=st.booleans())
    def ws_message(self, data: st.DataObject, size: int, text: bool, from_relay: bool) -> None:
        sid = data.draw(st.sampled_from(self.ids))
        conn = self.relay if from_relay else self.agent
        self._call(conn.send_ws_message, sid, b"w" * size, text=text)

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), from_relay=st.booleans())
    def ws_close(self, data: st.DataObject, from_relay: bool) -> None:
        sid = data.draw(st.sampled_from(self.ids))
        conn = self.relay if from_relay else self.agent
        self._call(conn.send_ws_close, sid, 1000, "bye")

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), from_relay=st.booleans())
    def reset(self, data: st.DataObject, from_relay: bool) -> None:
        sid = data.draw(st.sampled_from(self.ids))
        (self.relay if from_relay else self.agent).reset_stream(sid, ErrorCode.CANCEL, "gone")

    @precondition(lambda self: self.unacked)
    @rule(data=st.data(), flush=st.booleans())
    def acknowledge(self, data: st.DataObject, flush: bool) -> None:
        side, sid = key = data.draw(st.sampled_from(sorted(self.unacked)))
        n = data.draw(st.integers(1, self.unacked[key]))
        conn = self.relay if side == "relay" else self.agent
        conn.acknowledge(sid, n, flush=flush)
        self.unacked[key] -= n
        if not self.unacked[key]:
            del self.unacked[key]

    @rule()
    def deliver_to_agent(self) -> None:
        self._deliver(self.relay, self.agent, "agent")

    @rule()
    def deliver_to_relay(self) -> None:
        self._deliver(self.agent, self.relay, "relay")

    @rule()
    def settle(self) -> None:
        """Deliver everything both ways; then both ends agree on every stream's state."""
        for _ in range(4):
            self._deliver(self.relay, self.agent, "agent")
            self._deliver(self.agent, self.relay, "relay")
        for sid in self.ids:
            relay_state, agent_state = self.relay.state(sid), self.agent.state(sid)
            assert MIRROR[relay_state] is agent_state, (sid, relay_state, agent_state)
        assert self.relay.open_streams == self.agent.open_streams


TestConversation = Conversation.TestCase
TestConversation.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
