"""A RelayConnection and an AgentConnection wired to each other, for protocol tests."""

from __future__ import annotations

from typing import Any

from devtunnel.protocol import AgentConnection, Connection, Event, Hello, RelayConnection, Welcome


def exchange(sender: Connection, receiver: Connection) -> list[Event]:
    """Deliver everything ``sender`` queued to ``receiver``; return the events it produced."""
    return receiver.receive_data(sender.data_to_send())


def handshaken(
    relay_options: dict[str, Any] | None = None, agent_options: dict[str, Any] | None = None
) -> tuple[RelayConnection, AgentConnection]:
    """A relay and an agent that completed HELLO/WELCOME (nothing left queued on either)."""
    relay = RelayConnection(**(relay_options or {}))
    agent = AgentConnection(**(agent_options or {}))
    agent.send_hello("secret", "demo", {"agent": "test"})
    [hello] = exchange(agent, relay)
    assert isinstance(hello, Hello)
    relay.send_welcome("demo", "http://demo.localhost:8080")
    [welcome] = exchange(relay, agent)
    assert isinstance(welcome, Welcome)
    return relay, agent


def open_get(relay: RelayConnection, agent: AgentConnection, *, websocket: bool = False, end_stream: bool = True) -> int:
    """Open a stream with a body-less GET and deliver it; returns the stream id."""
    stream_id = relay.open_request(
        b"GET", b"/", b"1.1", ((b"host", b"demo.localhost"),), end_stream=end_stream, websocket=websocket
    )
    exchange(relay, agent)
    return stream_id
