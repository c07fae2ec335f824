"""``GET /api/tunnels/{name}/logs`` and the ``app`` object of ``/api/tunnels``, on a real agent
running a real app."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from starlette.requests import Request

from devtunnel.api.app import serve_api
from devtunnel.api.logs import FOLLOW_QUEUE, app_logs
from devtunnel.api.plumbing import TunnelAliases
from tests.helpers import async_wait_for, free_port
from tests.net.tunnel_fixtures import Harness, relay_and_agent

APP = Path(__file__).with_name("app_fixture.py")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Harness, httpx.AsyncClient]]:
    async with relay_and_agent(tmp_path) as harness:
        port = free_port()
        await harness.start(str(port), name="shop", run=f"{sys.executable} {APP} {port}", hold=5.0)
        await harness.start(str(free_port()), name="plain")
        server, bound = await serve_api(harness.service, 0)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bound}", timeout=10) as client:
                yield harness, client
        finally:
            await server.stop()


async def _lines(client: httpx.AsyncClient, query: str = "") -> list[dict]:
    response = await client.get("/api/tunnels/shop/logs" + query)
    assert response.status_code == 200, response.text
    return response.json()["lines"]


async def test_the_app_object_and_its_log(api: tuple[Harness, httpx.AsyncClient]) -> None:
    harness, client = api

    async def app() -> dict:
        tunnels = (await client.get("/api/tunnels")).json()["tunnels"]
        return {t["name"]: t["app"] for t in tunnels}

    await async_wait_for(lambda: harness.service._tunnels["shop"].app.state.state == "ready", what="ready")
    apps = await app()
    assert apps["plain"] is None
    shop = apps["shop"]
    assert shop["state"] == "ready" and shop["restarts"] == 0 and shop["hold"] == 5.0 and shop["health"] is None
    assert isinstance(shop["pid"], int) and shop["command"].startswith(sys.executable)
    await async_wait_for(lambda: len(harness.service.app_log("shop")) >= 2, what="two lines")

    body = (await client.get("/api/tunnels/shop/logs")).json()
    assert body["uri"] == "/api/tunnels/shop/logs" and body["tunnel"] == "shop" and body["dropped"] == 0
    streams = [line["stream"] for line in body["lines"]]
    assert streams[:2] == ["devtunnel", "out"]
    assert "\x1b]0;pwned" in body["lines"][1]["text"]  # raw in JSON: escaping is the terminal's job
    assert [l["text"] for l in await _lines(client, "?contains=LISTENING")] == [body["lines"][1]["text"]]
    assert len(await _lines(client, "?limit=1")) == 1
    assert len(await _lines(client, "?limit=0")) == len(body["lines"])


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/api/tunnels/nope/logs", 404, "no tunnel named 'nope'"),
    ("/api/tunnels/plain/logs", 404, "runs no app"),
    ("/api/tunnels/shop/logs?limit=x", 400, "limit must be an integer"),
    ("/api/tunnels/shop/logs?limit=-1", 400, "limit must be at least 0"),
])
async def test_bad_log_requests(api: tuple[Harness, httpx.AsyncClient], path: str, status: int, message: str) -> None:
    _, client = api
    response = await client.get(path)
    assert response.status_code == status
    assert message in response.json()["msg"]


async def test_follow_streams_new_lines_and_is_bounded(api: tuple[Harness, httpx.AsyncClient]) -> None:
    harness, client = api
    ring = harness.service.app_log("shop")
    await async_wait_for(lambda: len(ring) >= 2, what="the app's first line")
    async with client.stream("GET", "/api/tunnels/shop/logs?follow=1&limit=1") as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = response.aiter_lines()
        first = json.loads(await anext(lines))
        assert first["text"] == ring.lines()[-1].text
        ring.add("out", "a new line")
        async with asyncio.timeout(5):
            assert json.loads(await anext(lines))["text"] == "a new line"
        # A reader that does not read: more than the queue holds are counted, not kept.
        for i in range(FOLLOW_QUEUE + 50):
            ring.add("out", f"burst {i}")
        seen, dropped = 0, 0
        async with asyncio.timeout(10):
            while seen + dropped < FOLLOW_QUEUE + 50:
                item = json.loads(await anext(lines))
                if "dropped" in item and "text" not in item:
                    dropped += item["dropped"]
                else:
                    seen += 1
        assert dropped >= 50 and seen <= FOLLOW_QUEUE


async def test_a_line_written_before_the_stream_starts_is_followed(
        api: tuple[Harness, httpx.AsyncClient]) -> None:
    """The follow stream starts only after its headers are sent: a line the app writes between
    the request and then is in the stream (it was in neither the kept lines nor the new ones)."""
    harness, _ = api
    ring = harness.service.app_log("shop")
    await async_wait_for(lambda: len(ring) >= 2, what="the app's first line")
    app = SimpleNamespace(state=SimpleNamespace(service=harness.service, aliases=TunnelAliases(harness.service)))
    request = Request({"type": "http", "method": "GET", "path": "/api/tunnels/shop/logs", "app": app,
                       "query_string": b"follow=1&limit=0", "headers": [],
                       "path_params": {"name": "shop"}})
    response = await app_logs(request)
    ring.add("out", "written in between")
    stream = response.body_iterator  # type: ignore[attr-defined]
    try:
        async with asyncio.timeout(5):
            first = await anext(stream)
        text = first if isinstance(first, bytes) else first.encode()
        assert [json.loads(line)["text"] for line in text.splitlines()][-1] == "written in between"
    finally:
        await stream.aclose()


async def test_an_apps_log_is_found_by_any_name_of_its_tunnel(api: tuple[Harness, httpx.AsyncClient]) -> None:
    """As every route under a tunnel: ngrok v2's ``NAME (http)`` finds ``NAME``'s log."""
    harness, client = api
    await async_wait_for(lambda: len(harness.service.app_log("shop")) >= 1, what="the app's first line")
    response = await client.get("/api/tunnels/shop%20(http)/logs")
    assert response.status_code == 200, response.text
    assert response.json()["tunnel"] == "shop" and response.json()["lines"]
