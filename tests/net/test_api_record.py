"""ngrok's ``inspect: false`` (``tunnels.NAME.record = false``): a tunnel whose exchanges are
forwarded, counted and logged but not recorded, beside one that records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import async_wait_for
from tests.net.api_fixtures import Agent, running_agent

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with running_agent(tmp_path) as running:
        yield running


async def _get(public_url: str, path: str) -> httpx.Response:
    url = httpx.URL(public_url)
    async with httpx.AsyncClient() as public:
        return await public.get(url.copy_with(host="127.0.0.1", path=path), headers={"Host": url.netloc.decode()})


async def test_a_tunnel_started_with_inspect_false_is_forwarded_but_not_recorded(agent: Agent) -> None:
    quiet = await agent.client.post("/api/tunnels", json={"addr": agent.target, "name": "quiet", "inspect": False})
    loud = await agent.client.post("/api/tunnels", json={"addr": agent.target, "name": "loud"})
    assert quiet.status_code == loud.status_code == 201, quiet.text + loud.text
    assert quiet.json()["config"]["inspect"] is False and loud.json()["config"]["inspect"] is True
    assert (await _get(quiet.json()["public_url"], "/quiet")).status_code == 200
    assert (await _get(loud.json()["public_url"], "/loud")).status_code == 200
    assert [r[1] for r in agent.seen.requests] == ["/quiet", "/loud"]

    async def recorded() -> list[str]:
        data = (await agent.client.get("/api/requests/http")).json()["requests"]
        return [r["request"]["uri"] for r in data]

    await async_wait_for(lambda: agent.store.count() == 1, what="the loud tunnel's exchange recorded")
    assert await recorded() == ["/loud"]
    counted = (await agent.client.get("/api/tunnels/quiet")).json()["metrics"]["http"]["count"]
    assert counted == 1


async def test_inspect_must_be_a_boolean(agent: Agent) -> None:
    answer = await agent.client.post("/api/tunnels", json={"addr": agent.target, "inspect": "no"})
    assert answer.status_code == 400 and "inspect must be true or false" in answer.json()["msg"]
