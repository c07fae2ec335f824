"""Rules between an agent and a relay of different versions.

Rules an agent changes through its API that the relay cannot enforce end the tunnel, saying why.
An agent checks such rules with its own code before it sends them (a RULES frame), so only an agent
older (or newer) than the relay gets here: a devtunnel of this morning's release sent a basic-auth
rule matching ``-tunnel:x`` (refused since: the relay never sees a tunnel: field), was answered 201
by its API and listed the rule, while the relay logged "rules kept" and enforced the old ones. The
relay now tells it with ``GOAWAY RULES_REFUSED``, as it would at its next HELLO, and ends the tunnel.

A relay says how it reads a request's path for rules (WELCOME ``rule_paths``): one before that
(this morning's) let ``/public/..;/admin`` past a guard on ``-path:/public`` that a newer agent
sent it, and the agent said nothing; it now warns, naming the rule.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from devtunnel.protocol.agent_side import AgentConnection
from devtunnel.protocol.connection import ErrorCode
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.info import TunnelState
from devtunnel.agent.relay_signals import older_path_reading
from devtunnel.agent.tunnel import AgentTunnel, Backoff
from devtunnel.protocol.relay_side import RelayConnection
from devtunnel.protocol.events import GoAway, Welcome
from devtunnel.rules import parse_rules
from devtunnel.values.relay_url import CONNECT_PATH
from tests.helpers import async_wait_for
from tests.net._relay_agent import TOKEN, running_relay
from tests.net.tunnel_fixtures import read_hello, relay_and_agent


async def test_rules_the_relay_refuses_end_the_tunnel_with_the_reason() -> None:
    async with running_relay() as relay:
        conn = AgentConnection()
        async with websockets.connect(f"ws://127.0.0.1:{relay.port}{CONNECT_PATH}", ping_interval=None) as ws:
            conn.send_hello(TOKEN, "older", rules={"version": 1, "list": []})
            await ws.send(conn.data_to_send())
            events = conn.receive_data(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[arg-type]
            welcome = next(e for e in events if isinstance(e, Welcome))
            assert welcome.info.get("rules") == 1
            assert welcome.info.get("rule_paths") == 1
            conn.send_rules({"version": 1, "list": [{"action": "basic-auth", "match": "-tunnel:x", "users": ["a:b"]}]})
            await ws.send(conn.data_to_send())
            goaways: list[GoAway] = []
            try:
                async with asyncio.timeout(10):
                    async for message in ws:
                        goaways += [e for e in conn.receive_data(message) if isinstance(e, GoAway)]  # type: ignore[arg-type]
            except (TimeoutError, websockets.ConnectionClosed):
                pass
        assert [g.code for g in goaways] == [ErrorCode.RULES_REFUSED], goaways
        assert "rule 1: match: tunnel:" in goaways[0].reason
        await async_wait_for(lambda: relay.tunnels == [], what="the tunnel to go offline")
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "older.localhost"})
        assert r.status_code == 404


GUARD = parse_rules([{"action": "deny", "match": "method:DELETE"},
                     {"action": "basic-auth", "match": "-path:/public", "users": ["u:p"]}], "test")


def test_a_relay_that_does_not_say_how_it_reads_paths_is_warned_of_for_a_rule_on_the_path() -> None:
    older = Welcome(1, "demo", "http://demo.localhost", {"relay": "devtunnel 0.1", "rules": 1})
    warning = older_path_reading(older, GUARD)
    assert warning is not None
    assert "/public/..;/admin" in warning and "(rule 2)" in warning and "upgrade the relay" in warning
    assert older_path_reading(older, GUARD[:1]) is None  # no rule looks at the path
    newer = Welcome(1, "demo", "http://demo.localhost", {"relay": "devtunnel 0.1", "rules": 1, "rule_paths": 1})
    assert older_path_reading(newer, GUARD) is None


async def test_a_rule_the_relay_would_refuse_is_refused_by_the_api_and_the_tunnel_stays(tmp_path: Path) -> None:
    """The agent checks a change of rules with the relay's own code (the rules as sent): the
    257th rule through the API was answered 201, and the relay, which takes at most 256, ended the
    tunnel (or, before that, kept the old rules without a word)."""
    from devtunnel.api.app import serve_api

    async with relay_and_agent(tmp_path) as harness:
        await harness.start("9", rules=parse_rules([{"action": "deny", "match": f"path:/x{i}"} for i in range(256)],
                                                   "test"))
        server, api_port = await serve_api(harness.service, 0)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", trust_env=False) as api:
                more = await api.post("/api/tunnels/app/rules", json={"action": "deny", "match": "path:/y"})
                assert more.status_code == 400, more.text
                assert "257 rules; at most 256" in more.json()["msg"]
                assert len((await api.get("/api/tunnels/app/rules")).json()["rules"]) == 256
        finally:
            await server.stop()
        (info,) = harness.service.tunnels()
        assert info.state is TunnelState.ONLINE


@pytest.mark.parametrize("relay_says", [{"rules": 1}, {"rules": 1, "rule_paths": 1}])
async def test_an_agent_connected_to_an_older_relay_warns_of_its_rules_on_the_path_once(
    relay_says: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    """A relay welcoming as this morning's did (rules acknowledged, nothing said of paths), twice:
    the tunnel with a guard on ``-path:/public`` says once that it can be passed there."""
    caplog.set_level(logging.WARNING, logger="devtunnel.agent")
    welcomed = 0

    async def relay(ws: ServerConnection) -> None:
        nonlocal welcomed
        conn = RelayConnection()
        await read_hello(ws, conn)
        conn.send_welcome("guarded", "http://guarded.localhost", {"relay": "devtunnel 0.1.0", **relay_says})
        await ws.send(conn.data_to_send())
        welcomed += 1
        if welcomed == 1:
            await ws.close()  # the agent reconnects to the same relay
        else:
            await ws.wait_closed()

    async with serve(relay, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        tunnel = AgentTunnel(TunnelConfig(target="9", name="guarded", rules=GUARD),
                             relay_url=f"ws://127.0.0.1:{port}/_devtunnel/connect", sink=None,
                             on_change=lambda info: None, backoff=Backoff(base=0.01))
        await tunnel.start()
        try:
            await async_wait_for(lambda: welcomed == 2 and tunnel.info().state is TunnelState.ONLINE,
                                 what="the agent to be welcomed twice")
        finally:
            await asyncio.wait_for(tunnel.stop(), 30)
    warnings = [r.getMessage() for r in caplog.records if "reads request paths as older relays do" in r.getMessage()]
    if "rule_paths" in relay_says:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "(rule 2)" in warnings[0], warnings
