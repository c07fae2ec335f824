"""The two ends as types: each has only its own calls, and refuses the frames only it may send."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devtunnel.errors import ProtocolError
from devtunnel.protocol import AgentConnection, Connection, ErrorCode, GoAway, RelayConnection, Role
from devtunnel.protocol import frames as f
from tests.protocol.pairs import exchange, handshaken

RELAY_ONLY = ("send_welcome", "send_pool", "open_request", "streams_full")
AGENT_ONLY = ("send_hello", "send_rules", "send_response")
SHARED = (
    "receive_data", "data_to_send", "send_data", "send_ws_message", "send_ws_close", "reset_stream",
    "acknowledge", "send_window", "send_goaway", "ping", "state", "handshake_complete", "open_streams",
)

# A well-formed payload for each frame type only one end may send, so that a refusal is about
# the direction, never about the payload.
ONE_WAY_FRAMES = {
    "HELLO": f.frame(f.HELLO, 0, 0, json.dumps({"versions": [1], "token": "t", "name": "n"}).encode()),
    "WELCOME": f.frame(f.WELCOME, 0, 0, json.dumps({"version": 1, "name": "n", "url": "http://n", "info": {}}).encode()),
    "REQUEST": f.frame(f.REQUEST, f.END_STREAM, 1, f.encode_request(b"GET", b"/", b"1.1", (), "", "http")),
    "RESPONSE": f.frame(f.RESPONSE, f.END_STREAM, 1, f.encode_response(200, b"OK", b"1.1", ())),
    "POOL": f.frame(f.POOL, 0, 0, json.dumps({"members": 2}).encode()),
    "RULES": f.frame(f.RULES, 0, 0, json.dumps({"version": 1, "list": []}).encode()),
}
REFUSED_BY_RELAY = ("WELCOME", "REQUEST", "POOL")
REFUSED_BY_AGENT = ("HELLO", "RESPONSE", "RULES")


def refused(conn: Connection, frame: bytes, match: str) -> None:
    """``conn`` fails on ``frame`` with ``match`` and queues a GOAWAY PROTOCOL_ERROR for its peer."""
    conn.data_to_send()
    with pytest.raises(ProtocolError, match=match):
        conn.receive_data(frame)
    [goaway] = (AgentConnection() if isinstance(conn, RelayConnection) else RelayConnection()).receive_data(
        conn.data_to_send()
    )
    assert isinstance(goaway, GoAway) and goaway.code == ErrorCode.PROTOCOL_ERROR
    with pytest.raises(ProtocolError, match="already failed"):
        conn.receive_data(f.frame(f.PING, 0, 0, b"12345678"))


def test_each_end_names_its_role() -> None:
    assert RelayConnection().role is RelayConnection.role is Role.RELAY
    assert AgentConnection().role is AgentConnection.role is Role.AGENT


def test_the_shared_base_is_not_an_end_by_itself() -> None:
    with pytest.raises(TypeError):
        Connection()  # type: ignore[abstract]


@pytest.mark.parametrize("name", RELAY_ONLY)
def test_relay_only_calls_exist_on_the_relay_side_only(name: str) -> None:
    assert hasattr(RelayConnection(), name)
    assert not hasattr(AgentConnection(), name)
    assert not hasattr(Connection, name)


@pytest.mark.parametrize("name", AGENT_ONLY)
def test_agent_only_calls_exist_on_the_agent_side_only(name: str) -> None:
    assert hasattr(AgentConnection(), name)
    assert not hasattr(RelayConnection(), name)
    assert not hasattr(Connection, name)


@pytest.mark.parametrize("name", SHARED)
def test_both_ends_share_frames_streams_and_flow_control(name: str) -> None:
    assert hasattr(Connection, name)
    assert hasattr(RelayConnection(), name) and hasattr(AgentConnection(), name)


@pytest.mark.parametrize("kind", REFUSED_BY_RELAY)
def test_the_relay_refuses_what_only_a_relay_sends(kind: str) -> None:
    relay, _ = handshaken()
    refused(relay, ONE_WAY_FRAMES[kind], "the relay received a frame only it may send")


@pytest.mark.parametrize("kind", REFUSED_BY_AGENT)
def test_the_agent_refuses_what_only_an_agent_sends(kind: str) -> None:
    _, agent = handshaken()
    refused(agent, ONE_WAY_FRAMES[kind], "the agent received a frame only it may send")


@pytest.mark.parametrize("kind", REFUSED_BY_RELAY)
def test_before_the_hello_the_relay_refuses_the_same(kind: str) -> None:
    # A WELCOME is refused for its direction; the others for arriving before the HELLO.
    match = "only it may send" if kind == "WELCOME" else "before the HELLO that must come first"
    refused(RelayConnection(), ONE_WAY_FRAMES[kind], match)


@pytest.mark.parametrize("kind", REFUSED_BY_AGENT)
def test_before_the_welcome_the_agent_refuses_the_same(kind: str) -> None:
    agent = AgentConnection()
    agent.send_hello("tok", "n")
    match = "only it may send" if kind == "HELLO" else "before the WELCOME that must come first"
    refused(agent, ONE_WAY_FRAMES[kind], match)


@pytest.mark.parametrize("kind", REFUSED_BY_AGENT)
def test_the_relay_takes_what_the_agent_sends(kind: str) -> None:
    # The same payloads the agent refuses are accepted by the relay: only the direction differs.
    if kind == "HELLO":
        relay = RelayConnection()
    else:
        relay, agent = handshaken()
        if kind == "RESPONSE":
            relay.open_request(b"GET", b"/", b"1.1", (), end_stream=True)
            exchange(relay, agent)
    assert len(relay.receive_data(ONE_WAY_FRAMES[kind])) == 1


@pytest.mark.parametrize("kind", REFUSED_BY_RELAY)
def test_the_agent_takes_what_the_relay_sends(kind: str) -> None:
    agent = AgentConnection()
    agent.send_hello("tok", "n")
    if kind != "WELCOME":
        agent.receive_data(ONE_WAY_FRAMES["WELCOME"])
    assert len(agent.receive_data(ONE_WAY_FRAMES[kind])) == 1


MISUSE = """
from devtunnel.protocol import AgentConnection, RelayConnection

AgentConnection().open_request(b"GET", b"/", b"1.1", (), end_stream=True)
AgentConnection().send_welcome("n", "u")
RelayConnection().send_response(1, 200, b"OK", (), end_stream=True)
RelayConnection().send_hello("t", None)
"""


def test_calling_the_other_ends_method_is_a_type_error(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    root = Path(__file__).resolve().parents[2]
    snippet = tmp_path / "misuse.py"
    snippet.write_text(MISUSE)
    (tmp_path / "mypy.ini").write_text("[mypy]\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--config-file", str(tmp_path / "mypy.ini"),
         "--cache-dir", str(tmp_path / "cache"), str(snippet)],
        cwd=root, capture_output=True, text=True, timeout=110,
    )
    errors = [line for line in result.stdout.splitlines() if "error:" in line]
    assert len(errors) == 4, result.stdout + result.stderr
    for method, cls in [("open_request", "AgentConnection"), ("send_welcome", "AgentConnection"),
                        ("send_response", "RelayConnection"), ("send_hello", "RelayConnection")]:
        assert any(f'"{cls}" has no attribute "{method}"' in line for line in errors), result.stdout
