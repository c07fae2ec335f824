"""HELLO/WELCOME, version negotiation, the limits each side announces, and GOAWAY."""

from __future__ import annotations

import json

import pytest

from devtunnel.errors import ProtocolError
from devtunnel.protocol import AgentConnection, ErrorCode, GoAway, Hello, RelayConnection, Welcome
from devtunnel.protocol import frames as f
from tests.protocol.pairs import exchange, handshaken


def hello_frame(obj: object) -> bytes:
    return f.frame(f.HELLO, 0, 0, json.dumps(obj).encode())


def test_handshake_carries_token_name_url_and_info_both_ways() -> None:
    relay = RelayConnection()
    agent = AgentConnection()
    agent.send_hello("tok-1", "shop", {"agent_version": "0.1"})
    [hello] = exchange(agent, relay)
    assert isinstance(hello, Hello)
    assert (hello.version, hello.token, hello.name, hello.info["agent_version"]) == (1, "tok-1", "shop", "0.1")
    assert not relay.handshake_complete
    relay.send_welcome("shop", "https://shop.example.net", {"relay": "r1"})
    [welcome] = exchange(relay, agent)
    assert welcome == Welcome(1, "shop", "https://shop.example.net", welcome.info)
    assert welcome.info["relay"] == "r1"
    assert relay.handshake_complete and agent.handshake_complete
    assert relay.version == agent.version == 1


def test_hello_without_a_name_asks_the_relay_to_pick_one() -> None:
    relay = RelayConnection()
    agent = AgentConnection()
    agent.send_hello("tok", None)
    [hello] = exchange(agent, relay)
    assert isinstance(hello, Hello) and hello.name is None


def test_relay_picks_the_highest_version_both_sides_speak() -> None:
    relay = RelayConnection(versions=(1, 2, 3))
    agent = AgentConnection(versions=(2, 1, 7))
    agent.send_hello("tok", "n")
    [hello] = exchange(agent, relay)
    assert isinstance(hello, Hello) and hello.version == 2
    relay.send_welcome("n", "http://n")
    [welcome] = exchange(relay, agent)
    assert isinstance(welcome, Welcome) and welcome.version == 2 and agent.version == 2


def test_no_common_version_answers_goaway_unsupported_version() -> None:
    relay = RelayConnection()
    agent = AgentConnection(versions=(2, 3))
    agent.send_hello("tok", "n")
    with pytest.raises(ProtocolError, match="no common protocol version") as info:
        exchange(agent, relay)
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION
    [goaway] = exchange(relay, agent)
    assert isinstance(goaway, GoAway) and goaway.code == ErrorCode.UNSUPPORTED_VERSION
    assert "[2, 3]" in goaway.reason


def test_welcome_with_a_version_the_agent_did_not_offer_is_refused() -> None:
    agent = AgentConnection()
    agent.send_hello("tok", "n")
    agent.data_to_send()
    welcome = f.frame(f.WELCOME, 0, 0, json.dumps({"version": 9, "name": "n", "url": "u", "info": {}}).encode())
    with pytest.raises(ProtocolError, match="version 9") as info:
        agent.receive_data(welcome)
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION


@pytest.mark.parametrize(
    "hello",
    [
        {"versions": "1", "token": "t", "name": None},
        {"versions": [1], "token": 5, "name": None},
        {"versions": [1], "token": "t", "name": 3},
        {"versions": [1], "token": "t", "name": "n", "info": []},
        {"versions": [1], "token": "t", "name": "n", "info": {"max_frame_size": 12}},
        {"versions": [1], "token": "t", "name": "n", "info": {"initial_window": True}},
        ["not", "an", "object"],
    ],
)
def test_malformed_hello_is_a_protocol_error(hello: object) -> None:
    relay = RelayConnection()
    with pytest.raises(ProtocolError):
        relay.receive_data(hello_frame(hello))


def test_hello_that_is_not_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not valid UTF-8 JSON"):
        RelayConnection().receive_data(f.frame(f.HELLO, 0, 0, b"\xff{"))


@pytest.mark.parametrize("ftype", [f.PING, f.DATA, f.REQUEST, f.RESPONSE, f.WINDOW_UPDATE, f.RESET, f.WS_MESSAGE])
def test_relay_refuses_any_frame_before_hello(ftype: int) -> None:
    relay = RelayConnection()
    with pytest.raises(ProtocolError):
        relay.receive_data(f.frame(ftype, 0, 1, b"\0" * 8))
    [goaway] = AgentConnection().receive_data(relay.data_to_send())
    assert isinstance(goaway, GoAway) and goaway.code == ErrorCode.PROTOCOL_ERROR


def test_agent_refuses_a_request_before_welcome() -> None:
    relay, _ = handshaken()
    relay.open_request(b"GET", b"/", b"1.1", (), end_stream=True)
    agent = AgentConnection()
    agent.send_hello("tok", "n")
    with pytest.raises(ProtocolError, match="before the WELCOME"):
        agent.receive_data(relay.data_to_send())


def test_welcome_before_hello_was_sent_is_refused() -> None:
    welcome = f.frame(f.WELCOME, 0, 0, json.dumps({"version": 1, "name": "n", "url": "u"}).encode())
    with pytest.raises(ProtocolError, match="before HELLO"):
        AgentConnection().receive_data(welcome)


def test_second_hello_is_a_protocol_error() -> None:
    relay = RelayConnection()
    agent = AgentConnection()
    agent.send_hello("tok", "n")
    data = agent.data_to_send()
    relay.receive_data(data)
    with pytest.raises(ProtocolError, match="second HELLO"):
        relay.receive_data(data)


def test_handshake_frames_only_travel_their_own_way() -> None:
    relay, agent = handshaken()
    assert not hasattr(relay, "send_hello")  # only the agent sends HELLO
    assert not hasattr(agent, "send_welcome")  # only the relay sends WELCOME
    with pytest.raises(ProtocolError, match="received a frame only it may send"):
        agent.receive_data(hello_frame({"versions": [1], "token": "t", "name": None}))


def test_relay_cannot_welcome_twice_or_before_hello() -> None:
    with pytest.raises(ProtocolError, match="before the agent's HELLO"):
        RelayConnection().send_welcome("n", "u")
    relay, _ = handshaken()
    with pytest.raises(ProtocolError, match="already answered"):
        relay.send_welcome("n", "u")


def test_handshake_adopts_the_peer_frame_size_and_window() -> None:
    relay, agent = handshaken(agent_options={"max_frame_size": 4096, "initial_window": 10_000})
    stream_id = relay.open_request(b"POST", b"/", b"1.1", (), end_stream=False)
    assert relay.send_window(stream_id) == 10_000
    relay.send_data(stream_id, b"x" * 10_000, end_stream=True)
    events = exchange(relay, agent)
    sizes = [len(e.data) for e in events[1:]]
    assert sizes == [4096, 4096, 1808]


def test_auth_failure_goaway_reaches_the_agent_before_any_welcome() -> None:
    relay = RelayConnection()
    agent = AgentConnection()
    agent.send_hello("wrong", "n")
    exchange(agent, relay)
    relay.send_goaway(ErrorCode.AUTH_FAILED, "token refused")
    assert exchange(relay, agent) == [GoAway(ErrorCode.AUTH_FAILED, "token refused")]
    with pytest.raises(ProtocolError, match="already answered"):
        relay.send_welcome("n", "u")


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_goaway_code_and_reason_arrives_intact(code: ErrorCode) -> None:
    relay, agent = handshaken()
    relay.send_goaway(code, f"reason for {code.name} ✓")
    assert exchange(relay, agent) == [GoAway(code, f"reason for {code.name} ✓")]


def test_only_the_first_goaway_is_sent() -> None:
    relay, agent = handshaken()
    relay.send_goaway(ErrorCode.SHUTTING_DOWN, "restart")
    relay.send_goaway(ErrorCode.NO_ERROR, "again")
    assert exchange(relay, agent) == [GoAway(ErrorCode.SHUTTING_DOWN, "restart")]


def test_no_stream_opens_after_goaway_either_way() -> None:
    relay, agent = handshaken()
    agent.send_goaway(ErrorCode.NO_ERROR, "agent stopping")
    exchange(agent, relay)
    with pytest.raises(ProtocolError, match="going away") as info:
        relay.open_request(b"GET", b"/", b"1.1", (), end_stream=True)
    assert info.value.code == ErrorCode.REFUSED_STREAM
    relay2, _ = handshaken()
    relay2.send_goaway(ErrorCode.SHUTTING_DOWN, "bye")
    with pytest.raises(ProtocolError, match="going away"):
        relay2.open_request(b"GET", b"/", b"1.1", (), end_stream=True)


def test_goaway_with_a_short_payload_is_a_protocol_error() -> None:
    relay, agent = handshaken()
    with pytest.raises(ProtocolError, match="shorter than its 4-byte code"):
        agent.receive_data(f.frame(f.GOAWAY, 0, 0, b"\0\0"))


def test_goaway_reason_is_cut_to_the_peer_frame_size_on_a_character_boundary() -> None:
    relay, agent = handshaken(agent_options={"max_frame_size": 1024})
    relay.send_goaway(ErrorCode.NO_ERROR, "é" * 2000)
    [goaway] = exchange(relay, agent)
    assert isinstance(goaway, GoAway) and goaway.reason == "é" * 510


def test_failed_connection_queues_goaway_and_refuses_more_input() -> None:
    relay, agent = handshaken()
    with pytest.raises(ProtocolError, match="never opened"):
        agent.receive_data(f.frame(f.DATA, 0, 7, b"x"))
    [goaway] = exchange(agent, relay)
    assert isinstance(goaway, GoAway) and goaway.code == ErrorCode.PROTOCOL_ERROR and "never opened" in goaway.reason
    with pytest.raises(ProtocolError, match="already failed"):
        agent.receive_data(b"")


def test_invalid_constructor_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        RelayConnection(max_frame_size=1 << 24)
    with pytest.raises(ValueError, match="initial_window"):
        RelayConnection(initial_window=0)
    with pytest.raises(ValueError, match="max_streams"):
        RelayConnection(max_streams=0)
    with pytest.raises(ValueError, match="versions"):
        AgentConnection(versions=())


def test_ping_waits_for_our_handshake_frame() -> None:
    with pytest.raises(ProtocolError, match="before the handshake"):
        AgentConnection().ping()
    relay = RelayConnection()
    agent = AgentConnection()
    agent.send_hello("tok", "n")
    agent.ping(b"early!!!")
    with pytest.raises(ProtocolError, match="before the handshake"):
        relay.ping()
    events = exchange(agent, relay)
    assert [type(e).__name__ for e in events] == ["Hello", "PingReceived"]


def test_unknown_frame_types_are_skipped_even_before_the_handshake() -> None:
    relay = RelayConnection()
    agent = AgentConnection()
    agent.send_hello("tok", "n")
    [hello] = relay.receive_data(f.frame(0x40, 0, 9, b"future") + agent.data_to_send())
    assert isinstance(hello, Hello)


def test_handshake_module_uses_the_error_code_of_the_connection() -> None:
    from devtunnel.protocol import handshake

    assert handshake.UNSUPPORTED_VERSION == ErrorCode.UNSUPPORTED_VERSION


def test_our_limits_override_same_named_keys_the_caller_put_in_info() -> None:
    relay = RelayConnection()
    agent = AgentConnection(initial_window=5000)
    agent.send_hello("tok", "n", {"initial_window": 1, "note": "kept"})
    [hello] = exchange(agent, relay)
    assert isinstance(hello, Hello)
    assert hello.info["initial_window"] == 5000 and hello.info["note"] == "kept"


def test_welcome_and_the_first_request_may_arrive_in_one_message() -> None:
    relay = RelayConnection()
    agent = AgentConnection()
    agent.send_hello("tok", "n")
    exchange(agent, relay)
    relay.send_welcome("n", "http://n.localhost")
    sid = relay.open_request(b"GET", b"/first", b"1.1", (), end_stream=True)
    events = exchange(relay, agent)
    assert [type(e).__name__ for e in events] == ["Welcome", "RequestReceived"]
    assert events[1].stream_id == sid


def test_hello_carries_the_agent_instance_id_when_given() -> None:
    relay = RelayConnection()
    agent = AgentConnection()
    agent.send_hello("tok", "shop", instance="kX3-q_0123456789abcdef")
    [hello] = exchange(agent, relay)
    assert isinstance(hello, Hello) and hello.instance == "kX3-q_0123456789abcdef"


def test_a_hello_without_an_instance_id_from_an_older_agent_is_accepted() -> None:
    relay = RelayConnection()
    [hello] = relay.receive_data(hello_frame({"versions": [1], "token": "t", "name": "n", "info": {}}))
    assert isinstance(hello, Hello) and hello.instance is None
    agent = AgentConnection()
    agent.send_hello("t", "n")
    assert b"instance" not in agent.data_to_send()  # an older relay never sees the key


@pytest.mark.parametrize("instance", [5, "short", "x" * 129, "has space in it here", "ünïcode-ünïcode-ü", ""])
def test_a_malformed_instance_id_is_a_protocol_error(instance: object) -> None:
    relay = RelayConnection()
    with pytest.raises(ProtocolError, match="HELLO instance"):
        relay.receive_data(hello_frame({"versions": [1], "token": "t", "name": "n", "instance": instance}))


def test_sending_a_malformed_instance_id_raises_and_queues_nothing() -> None:
    agent = AgentConnection()
    with pytest.raises(ValueError, match="instance id"):
        agent.send_hello("t", "n", instance="not valid!")
    assert agent.data_to_send() == b""
    agent.send_hello("t", "n", instance="a" * 16)  # still free to say HELLO
    assert agent.data_to_send()


def test_name_in_use_goaway_reaches_the_agent_with_its_code() -> None:
    relay = RelayConnection()
    agent = AgentConnection()
    agent.send_hello("t", "shop")
    exchange(agent, relay)
    relay.send_goaway(ErrorCode.NAME_IN_USE, "tunnel name 'shop' is in use")
    assert exchange(relay, agent) == [GoAway(12, "tunnel name 'shop' is in use")]
