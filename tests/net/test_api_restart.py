"""``POST /api/tunnels/NAME/restart`` (the inspector's R): the tunnel reconnects and its app starts
again with every setting kept: its rules at the relay, its app, its hold."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from devtunnel.agent.config import TunnelConfig
from tests.helpers import async_wait_for, free_port
from tests.net.api_fixtures import Agent, running_agent

pytestmark = pytest.mark.timeout(60)

APP = Path(__file__).parent / "app_fixture.py"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with running_agent(tmp_path) as running:
        yield running


async def _public(public_url: str, path: str, **kwargs: object) -> httpx.Response:
    url = httpx.URL(public_url)
    async with httpx.AsyncClient() as public:
        return await public.get(url.copy_with(host="127.0.0.1", path=path),
                                headers={"Host": url.netloc.decode()}, **kwargs)  # type: ignore[arg-type]


async def test_a_restarted_tunnel_keeps_its_rules_at_the_relay(agent: Agent) -> None:
    started = await agent.client.post("/api/tunnels", json={"addr": agent.target, "name": "guarded",
                                                             "basic_auth": ["user:secret-pass"]})
    assert started.status_code == 201, started.text
    restarted = await agent.client.post("/api/tunnels/guarded/restart")
    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["name"] == "guarded"
    await async_wait_for(lambda: agent.service.tunnels()[0].state.value == "online", what="back online")
    public_url = restarted.json()["public_url"]
    assert (await _public(public_url, "/x")).status_code == 401
    assert (await _public(public_url, "/x", auth=("user", "secret-pass"))).status_code == 200


async def test_a_restarted_tunnel_starts_its_app_again_and_keeps_it(agent: Agent) -> None:
    port = free_port()
    await agent.service.start_tunnel(TunnelConfig(target=str(port), name="shop", run=f"{sys.executable} {APP} {port}"))
    app = agent.service._tunnels["shop"].app
    assert app is not None
    await app.child.wait_state("ready", timeout=30)
    first = app.child.state.pid
    answer = await agent.client.post("/api/tunnels/shop/restart")
    assert answer.status_code == 200, answer.text
    assert answer.json()["app"]["command"] == f"{sys.executable} {APP} {port}"
    await async_wait_for(lambda: app.child.state.state == "ready" and app.child.state.pid not in (None, first),
                         timeout=30, what="the app started again")
    # The tunnel reconnects beside the app's restart (the route answers while it does): a
    # request before it is back online gets the relay's 503.
    await async_wait_for(lambda: agent.service.tunnels()[0].state.value == "online", timeout=30, what="back online")
    assert (await _public(answer.json()["public_url"], "/after")).status_code == 200


async def test_restarting_a_tunnel_that_is_not_there_is_a_404(agent: Agent) -> None:
    answer = await agent.client.post("/api/tunnels/nope/restart")
    assert answer.status_code == 404
    assert "nope" in answer.json()["msg"]


async def test_a_tunnel_named_as_ngrok_names_it_restarts_by_either_name(agent: Agent) -> None:
    started = await agent.client.post("/api/tunnels", json={"addr": agent.target, "name": "My Hooks"})
    assert started.status_code == 201, started.text
    answer = await agent.client.post("/api/tunnels/My%20Hooks/restart")
    assert answer.status_code == 200, answer.text
    assert answer.json()["name"] == "my-hooks"


async def test_a_stopped_tunnel_restarts_under_its_name_with_its_app_hold_and_rules(agent: Agent) -> None:
    # The inspector's s stops a tunnel of devtunnel up (DELETE); it could only come back, with
    # its app, by restarting up. The restart route now starts it again as it ran.
    from devtunnel.rules import parse_rules

    port = free_port()
    rules = parse_rules([{"action": "basic-auth", "users": ["user:secret-pass"]}], "t")
    await agent.service.start_tunnel(TunnelConfig(target=str(port), name="shop", run=f"{sys.executable} {APP} {port}",
                                                  hold=5.0, rules=tuple(rules)))
    app = agent.service._tunnels["shop"].app
    assert app is not None
    await app.child.wait_state("ready", timeout=30)
    assert (await agent.client.delete("/api/tunnels/shop")).status_code == 204
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []  # gone from the list, as ngrok's
    assert app.child.state.state == "stopped"
    answer = await agent.client.post("/api/tunnels/shop/restart")
    assert answer.status_code == 200, answer.text
    started = answer.json()
    assert started["name"] == "shop" and started["app"]["command"] == f"{sys.executable} {APP} {port}"
    assert started["app"]["hold"] == 5.0
    again = agent.service._tunnels["shop"].app
    assert again is not None
    await again.child.wait_state("ready", timeout=30)
    assert (await _public(started["public_url"], "/x")).status_code == 401
    assert (await _public(started["public_url"], "/x", auth=("user", "secret-pass"))).status_code == 200
    assert (await agent.client.post("/api/tunnels/never/restart")).status_code == 404
