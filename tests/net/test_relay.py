"""The relay's routing, status page, auth and names, with a real agent WebSocket and curl."""

from __future__ import annotations

import asyncio
import hmac
import logging

import httpx
import pytest
import websockets

from devtunnel.relay import agents as relay_module
from devtunnel.relay.server import Relay
from devtunnel.values.relay_url import CONNECT_PATH
from devtunnel.protocol.agent_side import AgentConnection
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import GoAway
from tests.helpers import async_wait_for
from tests.net._relay_agent import TOKEN, ScriptedAgent, connect_agent, running_relay

async def agent_for(relay: Relay, name: str | None = "demo", token: str = TOKEN) -> ScriptedAgent:
    return await connect_agent(relay, name, token)


async def curl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def test_status_page_on_bare_domain_shows_version_and_tunnel_count(relay: Relay) -> None:
    agent = await agent_for(relay)
    try:
        code, out, _ = await curl("-H", f"Host: localhost:{relay.port}", f"http://127.0.0.1:{relay.port}/")
        assert code == 0
        assert "devtunnel relay" in out
        assert "tunnels online: 1" in out
    finally:
        await agent.close()


async def test_healthz_answers_ok(relay: Relay) -> None:
    code, out, _ = await curl("-w", "%{http_code}", f"http://127.0.0.1:{relay.port}/healthz")
    assert (code, out) == (0, "ok\n200")


async def test_unknown_tunnel_name_gets_404_naming_the_host(relay: Relay) -> None:
    code, out, _ = await curl("-w", "\n%{http_code}", "-H", "Host: nobody.localhost", f"http://127.0.0.1:{relay.port}/x")
    assert code == 0
    body, status = out.rsplit("\n", 1)
    assert status == "404"
    assert "nobody.localhost" in body


async def test_every_answer_of_the_relay_itself_says_nosniff(relay: Relay) -> None:
    # They quote what a public client sent (a Host, a path): a browser must read them as text.
    cases = [
        ("-H", "Host: <b>x</b>.localhost", "/<script>alert(1)</script>"),  # 404, no such tunnel
        ("-H", f"Host: localhost:{relay.port}", "/"),  # the status page
        ("-H", f"Host: localhost:{relay.port}", "/healthz"),
        ("-X", "BREW", "/"),  # 400 before any route (the relay's own parser answers)
    ]
    for flag, value, path in cases:
        code, out, _ = await curl("-i", flag, value, f"http://127.0.0.1:{relay.port}{path}")
        head = out.split("\r\n\r\n", 1)[0].lower()
        assert code == 0 and "x-content-type-options: nosniff" in head, (flag, value, path, out)
        assert "content-type: text/plain; charset=utf-8" in head, out


async def test_request_reaches_agent_through_curl_and_response_comes_back(relay: Relay) -> None:
    agent = await agent_for(relay)
    try:
        url = relay.public_url_for("demo")
        assert url == f"http://demo.localhost:{relay.port}"
        assert agent.welcome is not None and agent.welcome.url == url
        code, out, _ = await curl("--connect-to", f"demo.localhost:{relay.port}:127.0.0.1:{relay.port}",
                                  "-d", "hello", url + "/submit")
        assert code == 0
        assert out.startswith("POST /submit\n")
        assert "body=hello" in out
    finally:
        await agent.close()


async def test_a_fully_qualified_host_with_a_trailing_dot_reaches_its_tunnel(relay: Relay) -> None:
    agent = await agent_for(relay)
    try:
        code, out, _ = await curl("-H", f"Host: DEMO.localhost.:{relay.port}", f"http://127.0.0.1:{relay.port}/dot")
        assert code == 0
        assert out.startswith("GET /dot\n"), out
    finally:
        await agent.close()


async def test_spaces_after_a_header_value_are_no_part_of_it(relay: Relay) -> None:
    # llhttp drops the spaces before a value and keeps those after it: a Host with spaces after
    # it reached no tunnel (404), and every such value was recorded and replayed with them
    # (h11, which replays send with, refuses it). RFC 9110 5.5: they are no part of the value.
    agent = await agent_for(relay)
    try:
        head = (f"GET /sp HTTP/1.1\r\nHost: demo.localhost:{relay.port}   \r\nX-Trace:  a b \t \r\n"
                "Connection: close\r\n\r\n").encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(head)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert f"\nHost: demo.localhost:{relay.port}\n".encode() in answer and b"\nX-Trace: a b\n" in answer, answer
    finally:
        await agent.close()


@pytest.mark.parametrize(
    ("token", "reason"),
    [("wrong-token", "token refused"), ("", "no token given")],
)
async def test_agent_with_wrong_or_missing_token_is_refused_with_reason(relay: Relay, token: str, reason: str) -> None:
    agent = ScriptedAgent(relay.port, token=token, name="demo")
    result = await agent.connect()
    assert isinstance(result, GoAway)
    assert result.code == ErrorCode.AUTH_FAILED
    assert reason in result.reason
    await asyncio.wait_for(agent.closed.wait(), 5)
    assert relay.tunnels == []
    await agent.close()


async def test_token_check_uses_constant_time_compare_against_every_token(relay: Relay, monkeypatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(relay_module.hmac, "compare_digest", spy)
    agent = await agent_for(relay, token=TOKEN)
    await agent.close()
    # both configured tokens were compared, even though the first one matched
    assert [a for a, _ in calls[:2]] == [TOKEN.encode(), b"other-token"]


async def test_name_held_by_one_token_is_refused_to_another(relay: Relay) -> None:
    first = await agent_for(relay, name="shared")
    try:
        second = ScriptedAgent(relay.port, token="other-token", name="shared")
        result = await second.connect()
        assert isinstance(result, GoAway)
        assert result.code == ErrorCode.NAME_TAKEN
        assert "shared" in result.reason and "another token" in result.reason
        await second.close()
        assert relay.tunnels == ["shared"]
    finally:
        await first.close()


async def test_same_agent_instance_reclaims_its_name_and_replaces_its_old_connection(relay: Relay) -> None:
    instance = "the-same-agent-instance"
    first = await connect_agent(relay, "again", instance=instance)
    second = await connect_agent(relay, "again", instance=instance)
    try:
        await asyncio.wait_for(first.closed.wait(), 5)
        assert first.goaway is not None and first.goaway.code == ErrorCode.NAME_IN_USE
        assert "stale" in first.goaway.reason
        assert relay.tunnels == ["again"]
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "again.localhost"})
        assert r.status_code == 200
        assert second.requests  # the new connection answered
    finally:
        await first.close()
        await second.close()


async def test_agent_without_name_gets_random_readable_name(relay: Relay) -> None:
    agents = [await agent_for(relay, name=None) for _ in range(2)]
    try:
        names = [a.welcome.name for a in agents]  # type: ignore[union-attr]
        assert names[0] != names[1]
        for name in names:
            adjective, animal, number = name.split("-")
            assert adjective.isalpha() and animal.isalpha() and number.isdigit() and len(number) == 4
        assert sorted(relay.tunnels) == sorted(names)
    finally:
        for a in agents:
            await a.close()


@pytest.mark.parametrize(("name", "why"), [("bad_name!", "not a valid DNS label"),
                                           ("xn--pple-43d", "reserved")])  # shown as "аpple" (Cyrillic а)
async def test_invalid_name_is_refused_with_reason(relay: Relay, name: str, why: str) -> None:
    agent = ScriptedAgent(relay.port, token=TOKEN, name=name)
    result = await agent.connect()
    assert isinstance(result, GoAway)
    assert result.code == ErrorCode.NAME_TAKEN  # refused for good: the agent must not retry
    assert why in result.reason
    assert not relay.tunnels
    await agent.close()


async def test_name_is_freed_when_agent_disconnects(relay: Relay) -> None:
    agent = await agent_for(relay, name="leaving")
    await agent.close()
    await async_wait_for(lambda: relay.tunnels == [], what="tunnel to go offline")
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "leaving.localhost"})
    assert r.status_code == 404


async def test_stopping_the_relay_tells_agents_to_reconnect() -> None:
    async with running_relay() as relay:
        agent = await connect_agent(relay, name="stays")
    await asyncio.wait_for(agent.closed.wait(), 10)
    assert agent.goaway is not None
    assert agent.goaway.code == ErrorCode.SHUTTING_DOWN
    await agent.close()


async def _goaway_after(relay: Relay, payload: bytes | str | None) -> GoAway:
    """Open the agent WebSocket, send ``payload`` (None: nothing), return the relay's GOAWAY."""
    conn = AgentConnection()
    async with websockets.connect(f"ws://127.0.0.1:{relay.port}{CONNECT_PATH}", ping_interval=None) as ws:
        if payload is not None:
            await ws.send(payload)
        message = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(message, bytes)
        events = conn.receive_data(message)
    goaways = [e for e in events if isinstance(e, GoAway)]
    assert goaways, events
    return goaways[0]


async def test_agent_sending_text_instead_of_frames_is_refused_with_reason(relay: Relay) -> None:
    goaway = await _goaway_after(relay, "hello?")
    assert goaway.code == ErrorCode.PROTOCOL_ERROR
    assert "text WebSocket message" in goaway.reason


async def test_agent_speaking_another_protocol_version_is_refused(relay: Relay) -> None:
    other = AgentConnection(versions=(99,))
    other.send_hello(TOKEN, "demo")
    goaway = await _goaway_after(relay, other.data_to_send())
    assert goaway.code == ErrorCode.UNSUPPORTED_VERSION


async def test_agent_silent_after_connecting_is_refused_after_head_timeout() -> None:
    async with running_relay(head_timeout=0.2) as relay:
        goaway = await _goaway_after(relay, None)
    assert goaway.code == ErrorCode.PROTOCOL_ERROR
    assert "no HELLO" in goaway.reason


async def test_relay_logs_one_line_per_agent_connect_and_disconnect_not_per_request(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="devtunnel.relay")
    agent = await agent_for(relay, name="logged")
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            r = await client.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "logged.localhost"})
            assert r.status_code == 200
    await agent.close()
    await async_wait_for(lambda: relay.tunnels == [], what="the tunnel to go offline")
    lines = [r.getMessage() for r in caplog.records if r.name == "devtunnel.relay"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("tunnel logged online for agent 127.0.0.1:")
    assert lines[1].startswith("tunnel logged offline")
