"""Rules an agent changes through its API that the relay cannot enforce end the tunnel, saying why.

An agent checks such rules with its own code before it sends them (a RULES frame), so only an agent
older (or newer) than the relay gets here: a devtunnel of this morning's release sent a basic-auth
rule matching ``-tunnel:x`` (refused since: the relay never sees a tunnel: field), was answered 201
by its API and listed the rule, while the relay logged "rules kept" and enforced the old ones. The
relay now tells it with ``GOAWAY RULES_REFUSED``, as it would at its next HELLO, and ends the tunnel.
"""

from __future__ import annotations

import asyncio

import httpx
import websockets

from devtunnel.protocol.agent_side import AgentConnection
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import GoAway, Welcome
from devtunnel.values.relay_url import CONNECT_PATH
from tests.helpers import async_wait_for
from tests.net._relay_agent import TOKEN, running_relay


async def test_rules_the_relay_refuses_end_the_tunnel_with_the_reason() -> None:
    async with running_relay() as relay:
        conn = AgentConnection()
        async with websockets.connect(f"ws://127.0.0.1:{relay.port}{CONNECT_PATH}", ping_interval=None) as ws:
            conn.send_hello(TOKEN, "older", rules={"version": 1, "list": []})
            await ws.send(conn.data_to_send())
            events = conn.receive_data(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[arg-type]
            welcome = next(e for e in events if isinstance(e, Welcome))
            assert welcome.info.get("rules") == 1
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
