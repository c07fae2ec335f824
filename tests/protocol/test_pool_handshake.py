"""Pools in the protocol: HELLO's ``pool``, WELCOME's ``pool.members`` and the POOL frame."""

from __future__ import annotations

import json

import pytest

from devtunnel.errors import ProtocolError
from devtunnel.protocol import AgentConnection, ErrorCode, Hello, PoolChanged, RelayConnection, Welcome
from devtunnel.protocol import frames as f
from tests.protocol.pairs import exchange, handshaken, open_get


def test_a_hello_asking_for_a_pool_is_answered_with_the_members_sharing_the_name() -> None:
    relay = RelayConnection()
    agent = AgentConnection()
    agent.send_hello("tok", "api", pool=True)
    [hello] = exchange(agent, relay)
    assert isinstance(hello, Hello) and hello.pool is True
    relay.send_welcome("api", "http://api.localhost", pool=3)
    [welcome] = exchange(relay, agent)
    assert isinstance(welcome, Welcome) and welcome.pool == 3


def test_without_pool_neither_side_says_a_word_of_pools() -> None:
    relay = RelayConnection()
    agent = AgentConnection()
    agent.send_hello("tok", "api")
    data = agent.data_to_send()
    assert b"pool" not in data  # older relays never see the key
    [hello] = relay.receive_data(data)
    assert isinstance(hello, Hello) and hello.pool is False
    relay.send_welcome("api", "http://api.localhost")
    data = relay.data_to_send()
    assert b"pool" not in data
    [welcome] = agent.receive_data(data)
    assert isinstance(welcome, Welcome) and welcome.pool is None


def test_pool_updates_reach_the_agent_as_events() -> None:
    relay, agent = handshaken()
    relay.send_pool(2)
    relay.send_pool(1)
    assert exchange(relay, agent) == [PoolChanged(2), PoolChanged(1)]


def test_an_agent_that_does_not_know_pool_frames_skips_them() -> None:
    relay, agent = handshaken()
    unknown = f.frame(0x3F, 0, 0, b"{}")  # what POOL is to an agent of before pools
    assert agent.receive_data(unknown) == []
    relay.send_pool(2)
    assert exchange(relay, agent) == [PoolChanged(2)]


def test_only_the_relay_sends_pool_and_not_before_its_welcome() -> None:
    assert not hasattr(AgentConnection(), "send_pool")
    relay = RelayConnection()
    relay.send_pool(2)  # nothing to tell before WELCOME
    assert relay.data_to_send() == b""


@pytest.mark.parametrize("value", ["yes", 1, None, {}])
def test_a_hello_with_a_pool_that_is_not_a_boolean_is_a_protocol_error(value: object) -> None:
    relay = RelayConnection()
    payload = {"versions": [1], "token": "t", "name": "api", "info": {}, "pool": value}
    with pytest.raises(ProtocolError, match="HELLO pool must be true, false or absent"):
        relay.receive_data(f.frame(f.HELLO, 0, 0, json.dumps(payload).encode()))


@pytest.mark.parametrize("value", [2, {"members": 0}, {"members": "2"}, {"members": True}, {}, {"members": 2**31}])
def test_a_welcome_with_an_invalid_pool_is_a_protocol_error(value: object) -> None:
    agent = AgentConnection()
    agent.send_hello("t", "api", pool=True)
    agent.data_to_send()
    payload = {"version": 1, "name": "api", "url": "http://api", "info": {}, "pool": value}
    with pytest.raises(ProtocolError, match="WELCOME pool must be an object with members, a positive integer"):
        agent.receive_data(f.frame(f.WELCOME, 0, 0, json.dumps(payload).encode()))


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"members": -1}', b'{"count": 2}'])
def test_an_invalid_pool_frame_is_a_protocol_error(payload: bytes) -> None:
    _, agent = handshaken()
    with pytest.raises(ProtocolError, match="POOL"):
        agent.receive_data(f.frame(f.POOL, 0, 0, payload))


def test_a_pool_frame_on_a_stream_or_before_the_welcome_is_a_protocol_error() -> None:
    _, agent = handshaken()
    with pytest.raises(ProtocolError, match="POOL frame on a stream other than 0"):
        agent.receive_data(f.frame(f.POOL, 0, 1, b'{"members": 2}'))
    early = AgentConnection()
    early.send_hello("t", "api", pool=True)
    with pytest.raises(ProtocolError):
        early.receive_data(f.frame(f.POOL, 0, 0, b'{"members": 2}'))


def test_the_relay_refuses_a_pool_frame() -> None:
    relay, _ = handshaken()
    with pytest.raises(ProtocolError, match="only"):
        relay.receive_data(f.frame(f.POOL, 0, 0, b'{"members": 2}'))


def test_the_relay_knows_when_an_agent_carries_its_maximum_of_streams() -> None:
    relay, agent = handshaken({"max_streams": 4}, {"max_streams": 2})
    assert not relay.streams_full
    first = open_get(relay, agent, end_stream=False)
    open_get(relay, agent, end_stream=False)
    assert relay.streams_full  # the agent's limit, the lower one
    relay.reset_stream(first, ErrorCode.CANCEL, "gone")
    assert not relay.streams_full
