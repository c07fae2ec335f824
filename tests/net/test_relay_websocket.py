"""Public WebSockets through the relay, and the relay over TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trustme
import websockets

from devtunnel.relay.server import Relay
from devtunnel.protocol.events import WebSocketClosed, WebSocketMessageReceived
from tests.helpers import async_wait_for
from tests.net._relay_agent import AgentRequest, ScriptedAgent, connect_agent, running_relay

closes: list[tuple[int, str]] = []


async def ws_echo(request: AgentRequest) -> None:
    """Accept with subprotocol "chat"; echo text upper-cased and binary reversed; close on "bye"."""
    if not request.event.websocket:
        request.respond(200, [(b"Content-Length", b"2")])
        await request.send(b"ok", end=True)
        return
    if request.event.target.startswith(b"/deny"):
        request.respond(403, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"9")])
        await request.send(b"forbidden", end=True)
        return
    conn = request.agent.conn
    offered = b",".join(request.header(b"sec-websocket-protocol"))
    request.respond(101, [(b"Sec-WebSocket-Protocol", b"chat")] if b"chat" in offered else [])
    while True:
        event = await request.inbox.get()
        if isinstance(event, WebSocketClosed):
            closes.append((event.code, event.reason))
            conn.send_ws_close(request.id, event.code, event.reason)
            request.agent.flush()
            return
        assert isinstance(event, WebSocketMessageReceived)
        conn.acknowledge(request.id, len(event.data), flush=True)
        if event.text and event.data == b"bye":
            conn.send_ws_close(request.id, 4002, "agent says bye")
        elif event.text:
            conn.send_ws_message(request.id, event.data.upper(), text=True)
        else:
            conn.send_ws_message(request.id, event.data[::-1], text=False)
        request.agent.flush()


@pytest.fixture
async def agent(relay: Relay) -> AsyncIterator[ScriptedAgent]:
    closes.clear()
    a = await connect_agent(relay, handler=ws_echo)
    yield a
    await a.close()


def ws_url(relay: Relay, path: str = "/live", name: str = "demo") -> str:
    return f"ws://{name}.localhost:{relay.port}{path}"


def connect(url: str, **kwargs: object) -> websockets.connect:
    """A WebSocket client for ``url`` that connects to 127.0.0.1 whatever the host name."""
    return websockets.connect(url, host="127.0.0.1", **kwargs)  # type: ignore[arg-type]


async def test_websocket_text_binary_and_client_close_code_pass_through(relay: Relay, agent: ScriptedAgent) -> None:
    async with connect(ws_url(relay), subprotocols=["chat", "other"], compression=None) as ws:
        assert ws.subprotocol == "chat"
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 5) == "HELLO"
        await ws.send(b"\x00\x01\x02")
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x02\x01\x00"
        await ws.close(4001, "client done")
    await async_wait_for(lambda: closes, what="the agent to see the close")
    assert closes == [(4001, "client done")]
    seen = next(iter(agent.requests.values())).event
    assert seen.websocket
    assert (b"Upgrade", b"websocket") in seen.headers


async def test_websocket_handshake_headers_reach_the_agent_in_the_clients_case(relay: Relay, agent: ScriptedAgent) -> None:
    # uvicorn hands the handshake to its WebSocket protocol with lowercased names: the capture
    # (and every export of it) said `authorization:` and `x-mixed-CASE:` for what the client sent.
    async with connect(ws_url(relay), additional_headers=[("X-Mixed-CASE", "1"), ("Authorization", "Bearer t")]) as ws:
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), 5) == "HI"
    names = [n for n, _ in next(iter(agent.requests.values())).event.headers]
    assert names[:2] == [b"Host", b"Upgrade"]
    assert b"X-Mixed-CASE" in names and b"Authorization" in names and b"Sec-WebSocket-Key" in names
    assert names[-3:] == [b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Host"]


async def test_websocket_close_code_from_the_agent_reaches_the_client(relay: Relay, agent: ScriptedAgent) -> None:
    async with connect(ws_url(relay)) as ws:
        await ws.send("bye")
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4002, "agent says bye")


async def test_websocket_refused_by_local_service_reaches_client_as_http_response(relay: Relay, agent: ScriptedAgent) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        await connect(ws_url(relay, "/deny"))
    assert info.value.response.status_code == 403
    assert info.value.response.body == b"forbidden"


async def test_websocket_to_unknown_tunnel_gets_404(relay: Relay) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        await connect(ws_url(relay, name="nobody"))
    assert info.value.response.status_code == 404
    assert b"nobody.localhost" in info.value.response.body


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ssl.SSLContext]:
    ca = trustme.CA()
    cert = ca.issue_cert("tunnel.test", "*.tunnel.test", "127.0.0.1")
    folder = tmp_path_factory.mktemp("tls")
    chain, key = folder / "chain.pem", folder / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return chain, key, client


async def test_tls_serves_https_and_wss_with_https_public_urls(certs: tuple[Path, Path, ssl.SSLContext]) -> None:
    chain, key, client_ctx = certs
    async with running_relay(tls_cert=str(chain), tls_key=str(key), domain="tunnel.test") as relay:
        assert relay.public_url_for("demo") == f"https://demo.tunnel.test:{relay.port}"
        agent = ScriptedAgent(relay.port, token="s3cret-token", name="demo", handler=ws_echo, scheme="wss", ssl=client_ctx)
        await agent.connect()
        try:
            assert agent.welcome is not None and agent.welcome.url.startswith("https://")
            async with httpx.AsyncClient(verify=client_ctx) as client:
                r = await client.get(f"https://127.0.0.1:{relay.port}/", headers={"Host": "demo.tunnel.test"})
            assert (r.status_code, r.text) == (200, "ok")
            seen = next(iter(agent.requests.values())).event
            assert dict(seen.headers)[b"X-Forwarded-Proto"] == b"https"
            async with connect(f"wss://demo.tunnel.test:{relay.port}/live", ssl=client_ctx) as ws:
                await ws.send("tls")
                assert await asyncio.wait_for(ws.recv(), 5) == "TLS"
        finally:
            await agent.close()


async def test_public_url_setting_makes_https_urls_behind_a_proxy() -> None:
    async with running_relay(public_url="https://tunnel.example.com", domain="tunnel.example.com") as relay:
        assert relay.public_url_for("payments") == "https://payments.tunnel.example.com"


async def test_websocket_message_larger_than_the_window_arrives_whole(relay: Relay) -> None:
    fragments: list[int] = []

    async def measure(request: AgentRequest) -> None:
        conn = request.agent.conn
        request.respond(101, [])
        parts: list[bytes] = []
        while True:
            event = await request.inbox.get()
            if isinstance(event, WebSocketClosed):
                return
            assert isinstance(event, WebSocketMessageReceived)
            fragments.append(len(event.data))
            parts.append(event.data)
            conn.acknowledge(request.id, len(event.data), flush=True)
            if event.fin:
                message = b"".join(parts)
                parts.clear()
                # answer in two fragments, which the relay must join into one message
                conn.send_ws_message(request.id, b"%d " % len(message), text=True, fin=False)
                conn.send_ws_message(request.id, b"%d" % message.count(b"z"), text=True, fin=True)
            request.agent.flush()

    agent = await connect_agent(relay, handler=measure, initial_window=256 << 10)
    try:
        async with connect(ws_url(relay), max_size=None) as ws:
            await ws.send(b"z" * (3 << 20))
            assert await asyncio.wait_for(ws.recv(), 10) == f"{3 << 20} {3 << 20}"
        assert max(fragments) <= 256 << 10
        assert len(fragments) >= 12
    finally:
        await agent.close()


async def test_public_websocket_messages_an_agent_does_not_take_hold_at_most_the_relay_ceiling() -> None:
    """Each public WebSocket may send a message of up to 64 MiB; one the agent does not take
    stays in the relay, so a client opening many (a quarter of a tunnel's 1024 streams) held
    gigabytes. Past ``relay_buffer`` held together, the WebSocket growing beyond 64 KiB is
    closed with 1013 (try again later); the others go on."""
    MiB = 1 << 20
    ceiling = 4 * MiB

    async def never_takes(request: AgentRequest) -> None:  # a 101, then no credit back: a local app that does not read
        request.respond(101, [])
        request.agent.flush()
        while not isinstance(await request.inbox.get(), WebSocketClosed):
            pass

    async with running_relay(relay_buffer=ceiling) as relay:
        agent = await connect_agent(relay, handler=never_takes, initial_window=64 << 10)
        clients = [await connect(ws_url(relay), max_size=None, compression=None).__aenter__() for _ in range(4)]
        try:
            for ws in clients[:2]:
                held = relay.held_messages
                await ws.send(b"z" * (3 * MiB // 2))
                await async_wait_for(lambda: relay.held_messages >= held + MiB, what="the relay to hold the message")
            for ws in clients[2:]:
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await ws.send(b"z" * (3 * MiB // 2))
                    await asyncio.wait_for(ws.recv(), 10)
                assert info.value.rcvd is not None and info.value.rcvd.code == 1013
                assert relay.held_messages <= ceiling + (1 * MiB)
            assert [ws.state for ws in clients[:2]] == [websockets.State.OPEN] * 2
        finally:
            for ws in clients:
                await ws.close()
            await agent.close()
        await async_wait_for(lambda: relay.held_messages == 0, what="the relay to let the messages go")
