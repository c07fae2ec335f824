"""A filter regex that backtracks for ever is stopped, and the agent keeps serving meanwhile.

A real agent (embedded relay, API, SQLite store) records a request whose body is ``aaaa...!``;
the API is then asked for the captures whose body matches a catastrophic pattern. Before,
Python's ``re`` ran the search in the API's thread pool for minutes holding the GIL: the
event loop, and so every tunnel and the API, stood still.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import async_wait_for
from tests.net.api_fixtures import Agent, running_agent

pytestmark = pytest.mark.timeout(60)

BODY = b"a" * 5000 + b"!"


async def _public(public_url: str, path: str, content: bytes = b"") -> httpx.Response:
    url = httpx.URL(public_url)
    async with httpx.AsyncClient(trust_env=False, timeout=10) as public:
        return await public.post(
            url.copy_with(host="127.0.0.1", path=path), content=content, headers={"Host": url.netloc.decode()}
        )


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[Agent, str]]:
    async with running_agent(tmp_path) as running:
        resp = await running.client.post("/api/tunnels", json={"addr": running.target, "name": "slow", "proto": "http"})
        assert resp.status_code == 201, resp.text
        public_url = resp.json()["public_url"]
        assert (await _public(public_url, "/hook", BODY)).status_code == 200

        async def recorded() -> list[Any]:
            listed = (await running.client.get("/api/requests/http")).json()["requests"]
            return [r for r in listed if r["response"] is not None]

        await async_wait_for(recorded, what="the exchange to be recorded")
        yield running, public_url


async def _search_while_serving(agent: Agent, public_url: str, expression: str) -> tuple[httpx.Response, float, list[float]]:
    """GET the captures matching ``expression``; meanwhile, public requests through the tunnel,
    one after another. Returns the answer, its time, and each public request's time."""
    started = time.monotonic()
    search = asyncio.create_task(agent.client.get("/api/requests/http", params={"filter": expression}))
    served: list[float] = []
    while not search.done():
        t = time.monotonic()
        assert (await _public(public_url, "/meanwhile", b"x")).status_code == 200
        served.append(time.monotonic() - t)
    resp = await search
    return resp, time.monotonic() - started, served


@pytest.mark.parametrize("pattern", ["(a+)+$", "(a|a)+$"])
async def test_a_catastrophic_filter_regex_is_a_400_and_the_tunnel_carries_traffic_meanwhile(
    agent: tuple[Agent, str], pattern: str
) -> None:
    running, public_url = agent
    resp, took, served = await _search_while_serving(running, public_url, f'~b "{pattern}"')
    assert resp.status_code == 400, resp.text
    msg = resp.json()["msg"]
    assert msg.startswith(f"filter regex took too long: '(?s){pattern}'") and "Traceback" not in msg
    assert took < 10
    # The search ran about REGEX_TIMEOUT (1 s): the tunnel answered many requests meanwhile,
    # each at once.
    assert len(served) >= 3 and max(served) < 1.0, served
    # The API still answers filters that are fine.
    listed = (await running.client.get("/api/requests/http", params={"filter": '~b "a{5000}!"'})).json()
    assert [r["request"]["uri"] for r in listed["requests"]] == ["/hook"]


async def test_a_stopped_regex_is_in_the_json_error_as_it_came_and_the_body_is_ascii(agent: tuple[Agent, str]) -> None:
    # The message escaped the pattern, so a client escaping msg once showed \\x1b (and \\\\d).
    running, _ = agent
    resp = await running.client.get("/api/requests/http", params={"filter": '~b "(?:\x1b]0;\u202e\\d)?(a|a)+$"'})
    assert resp.status_code == 400, resp.text
    assert resp.json()["msg"].startswith("filter regex took too long: '(?s)(?:\x1b]0;\u202e\\d)?(a|a)+$' (it ran")
    # Read in a terminal (curl), the body acts on nothing: JSON escapes each character once.
    assert resp.content.isascii() and b"\x1b" not in resp.content
    assert b"(?:\\u001b]0;\\u202e\\\\d)?" in resp.content
