"""Rules in the handshake and the RULES frame."""

from __future__ import annotations

import json

import pytest

from devtunnel.errors import ProtocolError
from devtunnel.protocol import AgentConnection, Hello, RelayConnection
from devtunnel.protocol import frames as f
from devtunnel.protocol.events import RulesChanged
from tests.protocol.pairs import exchange, handshaken

RULES = {"version": 1, "list": [{"action": "deny", "match": "path:/admin"}]}


def test_hello_carries_rules_and_an_agent_without_them_sends_no_key() -> None:
    relay, agent = RelayConnection(), AgentConnection()
    agent.send_hello("tok", "shop", rules=RULES)
    [hello] = exchange(agent, relay)
    assert isinstance(hello, Hello) and hello.rules == RULES
    relay, agent = RelayConnection(), AgentConnection()
    agent.send_hello("tok", "shop")
    payload = agent.data_to_send()[f.HEADER.size :]
    assert "rules" not in json.loads(payload)
    [hello] = relay.receive_data(f.frame(f.HELLO, 0, 0, payload))
    assert isinstance(hello, Hello) and hello.rules is None


@pytest.mark.parametrize("rules", [[], {"version": "1", "list": []}, {"version": 1}, {"version": 1, "list": {}}])
def test_malformed_rules_in_hello_are_a_protocol_error(rules: object) -> None:
    relay = RelayConnection()
    hello = {"versions": [1], "token": "t", "name": None, "info": {}, "rules": rules}
    with pytest.raises(ProtocolError, match="HELLO rules must be an object"):
        relay.receive_data(f.frame(f.HELLO, 0, 0, json.dumps(hello).encode()))


def test_rules_frame_travels_from_agent_to_relay_after_the_handshake() -> None:
    relay, agent = handshaken()
    agent.send_rules(RULES)
    [event] = exchange(agent, relay)
    assert event == RulesChanged(RULES)


def test_only_the_agent_sends_rules_and_only_once_the_handshake_is_done() -> None:
    relay, agent = handshaken()
    assert not hasattr(relay, "send_rules")
    with pytest.raises(ProtocolError, match="before the handshake"):
        AgentConnection().send_rules(RULES)
    with pytest.raises(ProtocolError):  # a relay's RULES frame is refused by the agent
        agent.receive_data(f.frame(f.RULES, 0, 0, json.dumps(RULES).encode()))


def test_a_rules_frame_on_a_stream_or_malformed_is_a_protocol_error() -> None:
    relay, _ = handshaken()
    with pytest.raises(ProtocolError, match="stream other than 0"):
        relay.receive_data(f.frame(f.RULES, 0, 1, json.dumps(RULES).encode()))
    relay, _ = handshaken()
    with pytest.raises(ProtocolError, match="RULES rules must be an object"):
        relay.receive_data(f.frame(f.RULES, 0, 0, b'{"version": 1}'))
