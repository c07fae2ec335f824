"""The backend reads tunnels exactly as a real agent API sends them, and says so when an answer is not that shape."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import re
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from devtunnel.agent.info import TunnelInfo, TunnelState
from devtunnel.api.app import serve_api
from devtunnel.errors import NotFoundError, TunnelError
from devtunnel.export.agent_json import tunnel_json
from devtunnel.tui.backend import MAX_LOG_LINE, Backend, LogBatch, TunnelView
from tests.helpers import async_wait_for, free_port
from tests.net.tunnel_fixtures import Harness, relay_and_agent

APP = Path(__file__).parents[1] / "net" / "app_fixture.py"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[Harness, Backend, int]]:
    """A relay and an agent with its API: tunnel ``shop`` runs an app, ``plain`` runs none."""
    async with relay_and_agent(tmp_path) as harness:
        port = free_port()
        await harness.start(str(port), name="shop", run=f"{sys.executable} {APP} {port}", hold=5.0)
        await harness.start(str(free_port()), name="plain")
        server, bound = await serve_api(harness.service, 0)
        backend = Backend(tmp_path / "captures.db", f"http://127.0.0.1:{bound}")
        try:
            yield harness, backend, port
        finally:
            await backend.aclose()
            await server.stop()


async def test_tunnels_are_read_from_the_real_api_field_by_field(agent: tuple[Harness, Backend, int]) -> None:
    harness, backend, port = agent
    await async_wait_for(lambda: harness.service._tunnels["shop"].app.state.state == "ready", what="the app ready")
    async with httpx.AsyncClient(base_url=harness.base_url, timeout=10) as client:
        response = await client.get("/", headers={"host": harness.host("shop")})
    assert response.status_code == 200
    await async_wait_for(lambda: harness.service._tunnels["shop"].requests == 1, what="the request counted")

    views = {view.name: view for view in await backend.tunnels()}
    shop, plain = views["shop"], views["plain"]
    assert (shop.public_url, shop.target, shop.state) == (f"http://{harness.host('shop')}", f"http://127.0.0.1:{port}", "online")
    assert (shop.requests, shop.error, shop.next_retry_at, shop.via, shop.via_state) == (1, "", None, "", "")
    assert (shop.app_state, shop.app_restarts, shop.app_message) == ("ready", 0, "")
    assert (plain.state, plain.requests, plain.app_state, plain.app_restarts) == ("online", 0, "", 0)


async def test_a_started_tunnel_and_the_events_feed_read_the_same_shape(agent: tuple[Harness, Backend, int]) -> None:
    harness, backend, _ = agent
    started = await backend.start_tunnel(str(free_port()), "fresh")
    assert (started.name, started.public_url, started.state) == ("fresh", f"http://{harness.host('fresh')}", "online")
    seen: dict[str, TunnelView] = {}
    async with asyncio.timeout(10):
        async for message in backend.events():  # a new client first learns every tunnel
            if message["type"] == "tunnel":
                view = TunnelView.from_json(message["tunnel"])
                seen[view.name] = view
            if len(seen) == 3:
                break
    assert sorted(seen) == ["fresh", "plain", "shop"]
    assert seen["fresh"] == started


def _api_tunnel() -> dict[str, object]:
    info = TunnelInfo(name="shop", public_url="http://shop.localhost:8000", target_url="http://127.0.0.1:3000",
                      state=TunnelState.RECONNECTING, next_retry_at=12.5, error="relay gone", requests=4,
                      app={"command": "run", "state": "crashed", "pid": None, "restarts": 2, "exit_code": 1,
                           "message": "exited with code 1", "since": 1.0, "health": None, "hold": 0.0,
                           "log_lines": 3, "waiting": 0})
    return tunnel_json(info)


def test_every_field_comes_from_where_the_api_puts_it() -> None:
    view = TunnelView.from_json(_api_tunnel())
    assert view == TunnelView("shop", "http://shop.localhost:8000", "http://127.0.0.1:3000", "reconnecting",
                              next_retry_at=12.5, error="relay gone", requests=4, app_state="crashed",
                              app_restarts=2, app_message="exited with code 1", app_exit_code=1)


@pytest.mark.parametrize(("path", "value", "message"), [
    (("name",), None, "malformed tunnel: it has no 'name'"),
    (("state",), None, "malformed tunnel: it has no 'state'"),
    (("public_url",), None, "malformed tunnel: it has no 'public_url'"),
    (("config", "addr"), None, "malformed tunnel.config: it has no 'addr'"),
    (("metrics", "http"), None, "malformed tunnel.metrics: it has no 'http'"),
    (("via",), None, "malformed tunnel: it has no 'via'"),
    (("app", "state"), None, "malformed tunnel.app: it has no 'state'"),
    (("state",), 3, "malformed tunnel: 'state' is 3, not str"),
    (("metrics", "http", "count"), True, "malformed tunnel.metrics.http: 'count' is True, not int"),
    (("next_retry_at",), "soon", "malformed tunnel: 'next_retry_at' is 'soon', not int or float or null"),
    (("app",), [], "malformed tunnel: 'app' is [], not dict or null"),
])
def test_a_malformed_tunnel_is_an_error_naming_the_field(path: tuple[str, ...], value: object, message: str) -> None:
    data = _api_tunnel()
    parent = data
    for key in path[:-1]:
        parent = parent[key]  # type: ignore[assignment]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(TunnelError) as caught:
        TunnelView.from_json(data)
    assert str(caught.value) == f"the agent API sent a {message}"


class _Answers(http.server.BaseHTTPRequestHandler):
    """An agent API that answers ``GET /api/tunnels`` with the body the test sets."""

    body = b""
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answers() -> Iterator[tuple[str, type[_Answers]]]:
    handler = type("Handler", (_Answers,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("body", "message"), [
    (b'{"tunnels": [{"name": "shop"}]}', "the agent API sent a malformed tunnel: it has no 'config'"),
    (b'{"uri": "/api/tunnels"}', "the agent API sent a malformed tunnel list: it has no 'tunnels'"),
    (b"<html>not json</html>", "the agent API answered GET /api/tunnels with something that is not JSON"),
])
async def test_a_malformed_tunnel_list_is_an_error_not_an_empty_panel(
        tmp_path: Path, answers: tuple[str, type[_Answers]], body: bytes, message: str) -> None:
    url, handler = answers
    handler.body = body
    backend = Backend(tmp_path / "captures.db", url)
    try:
        with pytest.raises(TunnelError, match="^" + re.escape(message)):
            await backend.tunnels()
    finally:
        await backend.aclose()


async def _followed(backend: Backend, name: str, until: int) -> list[LogBatch]:
    batches: list[LogBatch] = []
    async with contextlib.aclosing(backend.follow_app_logs(name)) as stream:
        async for batch in stream:
            batches.append(batch)
            if len(batches) == until:
                break
    return batches


async def test_an_apps_log_is_followed_from_the_real_api(agent: tuple[Harness, Backend, int]) -> None:
    _, backend, port = agent
    async with contextlib.aclosing(backend.follow_app_logs("shop")) as stream:
        seen: list[str] = []
        async def until(text: str) -> None:
            async for batch in stream:
                seen.extend(line["text"] for line in batch.lines)
                if any(text in t for t in seen):
                    return
        await asyncio.wait_for(until("listening on"), 20)
        assert any(t.startswith("started app (pid") for t in seen)
        async with httpx.AsyncClient(timeout=5) as client:
            await client.get(f"http://127.0.0.1:{port}/now")
        await asyncio.wait_for(until("served /now #1"), 10)
    with pytest.raises(NotFoundError, match="runs no app|no app"):
        await _followed(backend, "plain", 1)


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, b'{"time": 1, "stream": "out", "text": "a"}\n\n{"dropped": 3}\n{"time": 2, "stream": "err", "text": "b"}\n',
     LogBatch([{"time": 1, "stream": "out", "text": "a"}, {"time": 2, "stream": "err", "text": "b"}], 3)),
    (200, b'{"time": 1, "stream": "out", "text": "a"}\n<html>\n', "a log line that is not JSON"),
    (200, b'[1, 2]\n', "a log line that is not a JSON object"),
    (200, b"x" * (MAX_LOG_LINE + 10), f"a log line over {MAX_LOG_LINE} bytes"),
    (404, b'{"error_code": 102, "status_code": 404, "msg": "tunnel shop runs no app", "details": {}}', NotFoundError),
    (500, b'{"error_code": 107, "status_code": 500, "msg": "broken", "details": {}}', "broken"),
])
async def test_a_followed_log_is_read_line_by_line_and_bad_lines_are_errors(
        tmp_path: Path, answers: tuple[str, type[_Answers]], status: int, body: bytes, expected: object) -> None:
    url, handler = answers
    handler.status, handler.body = status, body
    backend = Backend(tmp_path / "captures.db", url)
    try:
        if isinstance(expected, LogBatch):
            batches = await _followed(backend, "shop", 5)  # however the bytes were cut into reads
            assert [line for b in batches for line in b.lines] == expected.lines
            assert sum(b.dropped for b in batches) == expected.dropped
        elif expected is NotFoundError:
            with pytest.raises(NotFoundError, match="runs no app"):
                await _followed(backend, "shop", 5)
        else:
            with pytest.raises(TunnelError, match=re.escape(str(expected))):
                await _followed(backend, "shop", 5)
    finally:
        await backend.aclose()


async def test_the_api_is_called_directly_whatever_proxy_the_environment_names(
    agent: tuple[Harness, Backend, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy in the environment must not carry calls to this machine's loopback (the API refuses
    # what a proxy forwarded): this one is a closed port, so a call through it would fail.
    _, backend, _ = agent
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert {view.name for view in await backend.tunnels()} == {"shop", "plain"}
