"""Dev servers that refuse the public Host: the agent's log says, once, which setting or flag lets it through.

Behind a relay with a domain of its own (``--domain tunnel.test``), ``devtunnel http 5173`` sends
Vite the Host ``vite.tunnel.test``; Vite answers 403 "Blocked request. This host ... is not
allowed" and the log showed a bare ``403``. The local server below answers as each dev server
does (their exact texts): Vite, webpack-dev-server (its page, and its live-reload WebSocket that
refuses the Origin in its first message), Django's ``runserver`` (``ALLOWED_HOSTS``, then the
CSRF Origin check) and Rails (``config.hosts``). Everything runs as the user runs it: the relay
and ``devtunnel http`` as processes, requests through the relay's port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request, Response

from devtunnel.agent.devservers import MAX_HINTS
from tests.helpers import async_wait_for, free_port, ipv6_loopback
from tests.kit.procs import Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.tunnel_fixtures import parse_response, raw_request

pytestmark = pytest.mark.timeout(90)

TOKEN = "s3cret"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _vite_refusal(host: str) -> bytes:
    """Vite 6's answer to a Host it does not allow (``hostCheckMiddleware``), word for word."""
    quoted = f'"{host}"'
    return (f"Blocked request. This host ({quoted}) is not allowed.\n"
            f"To allow this host, add {quoted} to `server.allowedHosts` in vite.config.js.").encode()


def _answer(status: int, body: bytes, content_type: str = "text/plain") -> Response:
    return Response(status, HTTPStatus(status).phrase,
                    Headers({"Content-Type": content_type, "Content-Length": str(len(body))}), body)


def _dev_server(connection: ServerConnection, request: Request) -> Response | None:
    """Plain requests, by path: each dev server's refusal of a Host that is not loopback."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return None  # the live-reload socket: see ``_live_reload``
    hostname = request.headers.get("Host", "").rsplit(":", 1)[0]
    if hostname in LOCAL_HOSTS:
        return _answer(200, b"<!doctype html><h1>dev app</h1>", "text/html")
    if request.path == "/vite":
        return _answer(403, _vite_refusal(hostname))
    if request.path == "/webpack":
        return _answer(403, b"Invalid Host header")
    if request.path == "/django":
        # DEBUG's technical 400 page, shortened: the message comes HTML-escaped.
        return _answer(400, (b"<!DOCTYPE html>\n<html lang=\"en\">\n<head><title>DisallowedHost\n at /django</title></head>\n"
                             b"<body><pre class=\"exception_value\">Invalid HTTP_HOST header: &#x27;%s&#x27;. You may need"
                             b" to add &#x27;%s&#x27; to ALLOWED_HOSTS.</pre></body></html>") % (hostname.encode(), hostname.encode()),
                       "text/html; charset=utf-8")
    if request.path == "/csrf":
        origin = request.headers.get("Origin", "").encode()
        return _answer(403, b"<html><head><title>403 Forbidden</title></head><body><h1>Forbidden <span>(403)</span></h1>"
                            b"<p>CSRF verification failed. Request aborted.</p><p>Reason given for failure:</p><pre>\n"
                            b"    Origin checking failed - %s does not match any trusted origins.\n    </pre></body></html>"
                       % origin, "text/html; charset=utf-8")
    if request.path.startswith("/_next/"):  # Next.js 16 (blockCrossSiteDEV), to an Origin it does not know
        return _answer(403, b"Unauthorized")
    if request.path == "/rails":
        return _answer(403, (b"<h1>Blocked hosts: %s</h1><p>To allow requests to these hosts, make sure they are valid"
                             b" hostnames (containing only numbers, letters, dashes and dots), then add the following to"
                             b" your environment configuration:</p><pre>config.hosts &lt;&lt; &quot;%s&quot;</pre>")
                       % (hostname.encode(), hostname.encode()), "text/html; charset=utf-8")
    return _answer(404, b"not found")


async def _live_reload(ws: ServerConnection) -> None:
    """webpack-dev-server's socket: an Origin that is not loopback gets an error message, then the close."""
    await ws.send('{"type":"error","data":"Invalid Host/Origin header"}')
    await ws.close()


@asynccontextmanager
async def tunnel(env: dict[str, str], procs: list[Proc], *flags: str) -> AsyncIterator[tuple[int, Proc]]:
    """A relay serving NAME.tunnel.test on loopback, and ``devtunnel http`` to the dev server as ``app``:
    yields the relay's port and the agent."""
    async with serve(_live_reload, "127.0.0.1", 0, process_request=_dev_server) as server:
        async with tunnel_to(env, procs, server.sockets[0].getsockname()[1], *flags) as ends:
            yield ends


@asynccontextmanager
async def tunnel_to(env: dict[str, str], procs: list[Proc], local: int, *flags: str) -> AsyncIterator[tuple[int, Proc]]:
    """``tunnel`` to the service on port ``local``."""
    relay_port = free_port()
    relay = start(procs, env, "relay", "--listen", f"127.0.0.1:{relay_port}", "--domain", "tunnel.test",
                  "--token", TOKEN)
    await async_wait_for(lambda: any("listening" in line for line in relay.out + relay.err), timeout=20,
                         what=f"the relay: {relay.out} {relay.err}")
    agent = start(procs, env, "http", str(local), "--no-tui", "--relay", f"ws://127.0.0.1:{relay_port}",
                  "--token", TOKEN, "--name", "app", "--api-port", "0", "--db", env["XDG_STATE_HOME"] + "/c.db",
                  *flags)
    await async_wait_for(lambda: any(line.startswith("Forwarding") for line in agent.out), timeout=20,
                         what=f"Forwarding: {agent.out} {agent.err}")
    yield relay_port, agent
    agent.stop()
    relay.stop()


async def get(relay_port: int, path: str, *headers: str) -> int:
    """The status of ``GET path`` (``POST`` with an Origin) at app.tunnel.test through the relay."""
    method = "POST" if any(h.startswith("Origin:") for h in headers) else "GET"
    head = "".join(f"{h}\r\n" for h in headers)
    raw = await raw_request(relay_port, f"{method} {path} HTTP/1.1\r\nHost: app.tunnel.test\r\n{head}"
                                        "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
    return parse_response(raw)[0]


def hints(agent: Proc) -> list[str]:
    return [line.split(" ", 1)[1] for line in agent.err if " tunnel app: " in line]


async def test_each_dev_servers_refusal_of_the_public_host_gets_one_line_naming_what_lets_it_through(
    env: dict[str, str], procs: list[Proc]
) -> None:
    async with tunnel(env, procs) as (relay_port, agent):
        for path in ("/vite", "/vite", "/webpack", "/django", "/rails", "/rails"):
            assert await get(relay_port, path) in (400, 403)
        assert await get(relay_port, "/csrf", "Origin: https://app.tunnel.test") == 403
        assert await get(relay_port, "/_next/static/chunks/main.js", "Origin: https://app.tunnel.test") == 403
        await async_wait_for(lambda: len(hints(agent)) >= 6, what=f"six hints: {agent.err}")
        assert await get(relay_port, "/nowhere") == 404  # a 404 says nothing more
        await async_wait_for(lambda: any(" 404 " in line for line in agent.out), what=f"the 404's line: {agent.out}")
        assert hints(agent) == [
            'tunnel app: Vite refused the Host "app.tunnel.test": add "app.tunnel.test" to server.allowedHosts'
            " in vite.config.js, or start devtunnel with --host-header rewrite (the local Host)",
            "tunnel app: webpack-dev-server refused the Host app.tunnel.test: set devServer.allowedHosts to 'all'"
            " (or add the host) in webpack.config.js; --host-header rewrite serves the page, but its live-reload"
            " WebSocket checks the Origin too",
            "tunnel app: Django refused the Host app.tunnel.test: add 'app.tunnel.test' to ALLOWED_HOSTS in"
            " settings.py, or start devtunnel with --host-header rewrite (the local Host)",
            'tunnel app: Rails refused the Host app.tunnel.test: add config.hosts << "app.tunnel.test" to'
            " config/environments/development.rb, or start devtunnel with --host-header rewrite (the local Host)",
            "tunnel app: Django refused a form posted from https://app.tunnel.test (CSRF): add"
            " CSRF_TRUSTED_ORIGINS = ['https://app.tunnel.test'] to settings.py",
            "tunnel app: Next.js refused its dev resources to the Origin https://app.tunnel.test: add"
            " allowedDevOrigins: ['app.tunnel.test'] to next.config.js and restart it",
        ]


async def test_with_host_header_rewrite_the_page_loads_and_a_refused_live_reload_socket_is_explained(
    env: dict[str, str], procs: list[Proc]
) -> None:
    async with tunnel(env, procs, "--host-header", "rewrite") as (relay_port, agent):
        assert await get(relay_port, "/vite") == 200  # the local Host: Vite lets it through
        async with connect("ws://app.tunnel.test/ws", host="127.0.0.1", port=relay_port,
                           origin="https://app.tunnel.test") as ws:  # type: ignore[arg-type]
            assert "Invalid Host/Origin header" in str(await asyncio.wait_for(ws.recv(), 10))
        await async_wait_for(lambda: hints(agent), what=f"a hint: {agent.err}")
        assert hints(agent) == [
            "tunnel app: webpack-dev-server refused the live-reload WebSocket from https://app.tunnel.test (its Host"
            " or Origin is not allowed): set devServer.allowedHosts to 'all' (or add the host) in webpack.config.js"]


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
async def test_a_dev_server_on_ipv6_loopback_only_is_named_in_the_log_once_not_only_in_the_502(
    env: dict[str, str], procs: list[Proc]
) -> None:
    """``devtunnel http 5173`` to a Vite on ``[::1]:5173``: a webhook's sender reads no 502, the log said ``local_refused``."""
    async with serve(_live_reload, "::1", 0, process_request=_dev_server) as server:
        port = server.sockets[0].getsockname()[1]
        agent = start(procs, env, "http", str(port), "--no-tui", "--api-port", "0",
                      "--db", env["XDG_STATE_HOME"] + "/c.db")
        await async_wait_for(lambda: any(line.startswith("Forwarding") for line in agent.out), timeout=20,
                             what=f"Forwarding: {agent.out} {agent.err}")
        relay_port = int(agent.out[0].split(" -> ")[0].rsplit(":", 1)[1])
        name = agent.out[0].split("//", 1)[1].split(".", 1)[0]
        for _ in range(2):
            raw = await raw_request(relay_port, f"GET / HTTP/1.1\r\nHost: {name}.localhost\r\nConnection: close\r\n\r\n".encode())
            assert parse_response(raw)[0] == 502
        await async_wait_for(lambda: sum(" 502 " in line for line in agent.out) == 2, what=f"two 502s: {agent.out}")
        said = [line for line in agent.err if f"tunnel {name}: " in line]
        assert len(said) == 1, agent.err
        assert said[0].endswith(f"tunnel {name}: A service listens on [::1]:{port} (IPv6 loopback, where Node and Vite"
                                f" may put localhost): start devtunnel http http://[::1]:{port}, or have it listen on 127.0.0.1.")
        agent.stop()


async def test_a_websocket_answered_with_no_http_says_what_it_sent_and_next_js_refusing_hmr_is_explained(
    env: dict[str, str], procs: list[Proc]
) -> None:
    """Next.js 16 answers an HMR handshake from an Origin it does not know by writing ``Unauthorized``
    on the socket: the 502 said only "did not receive a valid HTTP response"."""

    async def next_dev(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"Unauthorized")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(next_dev, "127.0.0.1", 0)
    try:
        async with tunnel_to(env, procs, server.sockets[0].getsockname()[1]) as (relay_port, agent):
            with pytest.raises(InvalidStatus) as refused:
                async with connect("ws://app.tunnel.test/_next/webpack-hmr", host="127.0.0.1", port=relay_port,
                                   origin="https://app.tunnel.test"):  # type: ignore[arg-type]
                    pass
            assert refused.value.response.status_code == 502
            assert refused.value.response.body.endswith(b"did not receive a valid HTTP response (it sent Unauthorized)")
            await async_wait_for(lambda: hints(agent), what=f"a hint: {agent.err}")
            assert hints(agent) == ["tunnel app: Next.js refused its dev resources to the Origin https://app.tunnel.test:"
                                    " add allowedDevOrigins: ['app.tunnel.test'] to next.config.js and restart it"]
    finally:
        server.close()
        await server.wait_closed()


VITE_HINT = ('Vite refused the Host "app.tunnel.test": add "app.tunnel.test" to server.allowedHosts in vite.config.js,'
             " or start devtunnel with --host-header rewrite (the local Host)")


async def test_with_no_record_each_refusal_still_gets_its_hint(env: dict[str, str], procs: list[Proc]) -> None:
    """``--no-record`` keeps no body, and the hints read the refusal's: they were not given at all."""
    async with tunnel(env, procs, "--no-record") as (relay_port, agent):
        for path in ("/vite", "/webpack", "/django", "/rails"):
            assert await get(relay_port, path) in (400, 403)
        assert await get(relay_port, "/csrf", "Origin: https://app.tunnel.test") == 403
        assert await get(relay_port, "/_next/static/chunks/main.js", "Origin: https://app.tunnel.test") == 403
        async with connect("ws://app.tunnel.test/ws", host="127.0.0.1", port=relay_port,
                           origin="https://app.tunnel.test") as ws:  # type: ignore[arg-type]
            assert "Invalid Host/Origin header" in str(await asyncio.wait_for(ws.recv(), 10))
        await async_wait_for(lambda: len(hints(agent)) >= 7, what=f"seven hints: {agent.err}")
        said = hints(agent)
        assert said[0] == f"tunnel app: {VITE_HINT}"
        assert [line.split(": ", 1)[1].split(" refused ")[0] for line in said] == [
            "Vite", "webpack-dev-server", "Django", "Rails", "Django", "Next.js", "webpack-dev-server"]
        assert "live-reload WebSocket from https://app.tunnel.test" in said[-1]


async def test_the_tunnels_entry_of_the_api_lists_its_hints_bounded(
    env: dict[str, str], procs: list[Proc]
) -> None:
    """An inspector that did not start the app reads the hints where it reads the tunnel: ``/api/tunnels``
    (and its events); ngrok's fields are unchanged beside them. A client posting from ever new
    Origins gets a bounded list, and no more lines in the log."""
    api = free_port()
    async with tunnel(env, procs, "--api-port", str(api)) as (relay_port, agent):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api}", timeout=10) as client:
            before = (await client.get("/api/tunnels/app")).json()
            assert before["hints"] == []
            assert await get(relay_port, "/vite") == 403
            await async_wait_for(lambda: hints(agent), what=f"a hint: {agent.err}")
            entry = (await client.get("/api/tunnels")).json()["tunnels"][0]
            assert entry["hints"] == [VITE_HINT]
            assert {"name", "uri", "public_url", "proto", "config", "metrics"} <= set(entry)
            assert entry["public_url"] == before["public_url"] and entry["config"] == before["config"]
            for n in range(MAX_HINTS + 4):  # each Origin its own hint
                assert await get(relay_port, "/csrf", f"Origin: https://o{n}.example") == 403
            await async_wait_for(lambda: len(hints(agent)) == MAX_HINTS, what=f"{MAX_HINTS} hints: {agent.err}")
            assert await get(relay_port, "/csrf", "Origin: https://late.example") == 403
            await async_wait_for(lambda: sum(" 403 " in line for line in agent.out) == MAX_HINTS + 6,
                                 what="a line for each 403")
            listed = (await client.get("/api/tunnels/app")).json()["hints"]
            assert len(listed) == MAX_HINTS and listed[0] == VITE_HINT
            assert not any("late.example" in line for line in listed + hints(agent))
