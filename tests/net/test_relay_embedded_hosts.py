"""The Hosts the embedded relay answers (``Relay.answers``): its own names, never a rebound site's.

A page of another site that a browser reached 127.0.0.1 through (DNS rebinding) sends its own
site's name as Host; the embedded relay answers it 421 on every path (a request that arrives
whole, one whose body is still coming, a WebSocket handshake, the agents' endpoint) and on a
pinned port too, where only the provider's public host (``serve_host``) is added. A relay of
its own domain routes by domain as before.
"""

from __future__ import annotations

import asyncio
import pytest

from tests.net._relay_agent import connect_agent, running_relay
from tests.net.test_relay_direct import read_responses
from tests.net.test_relay_pins import answer

WS_HANDSHAKE = (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


async def ask(port: int, raw: bytes) -> tuple[bytes, bytes]:
    """Send ``raw`` and read one response (which may come before all of ``raw``'s body did)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        [(status, body)] = await read_responses(reader, 1)
        return status, body
    finally:
        writer.close()


def get(host: bytes, path: bytes = b"/") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"


@pytest.mark.parametrize("host", [b"evil.com", b"rebind.attacker.example:8080", b"127.0.0.1.nip.io",
                                  b"localhost.attacker.example", b"[::2]", b"127.0.0.2", b"EVIL.com."])
async def test_a_foreign_host_gets_421_on_every_path_of_the_embedded_relay(host: bytes) -> None:
    async with running_relay(embedded=True) as relay:
        agent = await connect_agent(relay, name="vite", handler=answer(b"vite"))
        try:
            status, body = await ask(relay.port, get(host))
            assert status == b"HTTP/1.1 421 Misdirected Request", (status, body)
            assert body.startswith(b"devtunnel: this relay does not answer for Host " + host + b": ")
            assert b"http://vite.localhost:%d/" % relay.port in body
            # a body still to come (3 of its 5 bytes never sent): the ASGI path, answered at once
            status, _ = await ask(relay.port, b"POST /slow HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 5\r\n\r\nab")
            assert status == b"HTTP/1.1 421 Misdirected Request"
            status, _ = await ask(relay.port, b"GET /live HTTP/1.1\r\nHost: " + host + b"\r\n" + WS_HANDSHAKE + b"\r\n")
            assert status == b"HTTP/1.1 421 Misdirected Request"
            assert agent.requests == {}, "the tunnel never saw one of them"
        finally:
            await agent.close()


@pytest.mark.parametrize("host", [b"vite.localhost", b"VITE.localhost:%d", b"127.0.0.1", b"127.0.0.1:%d",
                                  b"[::1]:%d", b"[::1]", b"other.localhost:%d", b""])
async def test_the_names_of_this_machine_are_answered(host: bytes) -> None:
    async with running_relay(embedded=True) as relay:
        agent = await connect_agent(relay, name="vite", handler=answer(b"vite"))
        try:
            raw = host % relay.port if b"%d" in host else host
            status, body = await ask(relay.port, get(raw, b"/page"))
            if raw.startswith(b"other."):
                assert status == b"HTTP/1.1 404 Not Found", "a tunnel that is not online, as before"
            else:
                assert (status, body) == (b"HTTP/1.1 200 OK", b"vite /page ")
        finally:
            await agent.close()


async def test_no_agent_logs_in_with_a_foreign_host() -> None:
    async with running_relay(embedded=True) as relay:
        login = b"GET /_devtunnel/connect HTTP/1.1\r\nHost: evil.com\r\n" + WS_HANDSHAKE + b"\r\n"
        status, _ = await ask(relay.port, login)
        assert status == b"HTTP/1.1 421 Misdirected Request"
        assert relay.tunnels == []
        # the agent's own login names the relay by address
        agent = await connect_agent(relay, name="vite")
        await agent.close()


async def test_a_pinned_port_answers_its_providers_public_host_and_no_other() -> None:
    async with running_relay(embedded=True) as relay:
        agent = await connect_agent(relay, name="shop", handler=answer(b"shop"))
        try:
            port = await relay.pin("shop")
            public = b"seasonal-deck.trycloudflare.com"
            assert (await ask(port, get(public)))[0] == b"HTTP/1.1 421 Misdirected Request", "no URL yet"
            relay.serve_host(port, "https://seasonal-deck.trycloudflare.com")
            for host in (public, b"Seasonal-Deck.TryCloudflare.com:443", b"127.0.0.1:%d" % port, b"shop.localhost"):
                assert await ask(port, get(host, b"/hook")) == (b"HTTP/1.1 200 OK", b"shop /hook "), host
            status, body = await ask(port, get(b"rebind.attacker.example"))
            assert status == b"HTTP/1.1 421 Misdirected Request"
            assert b"and the public host of the --via provider forwarding here only" in body
            # the main port does not answer the provider's host: it arrives at the pinned port
            assert (await ask(relay.port, get(public)))[0] == b"HTTP/1.1 421 Misdirected Request"
            # a restarted provider's new URL replaces the old one
            relay.serve_host(port, "https://another-run.trycloudflare.com")
            assert (await ask(port, get(public)))[0] == b"HTTP/1.1 421 Misdirected Request"
            assert (await ask(port, get(b"another-run.trycloudflare.com")))[0] == b"HTTP/1.1 200 OK"
        finally:
            await agent.close()


async def test_a_relay_of_its_own_domain_routes_every_host_as_before() -> None:
    async with running_relay(domain="tunnel.test") as relay:
        agent = await connect_agent(relay, name="demo", handler=answer(b"demo"))
        try:
            assert await ask(relay.port, get(b"demo.tunnel.test")) == (b"HTTP/1.1 200 OK", b"demo / ")
            for host in (b"evil.com", b"127.0.0.1"):  # outside the domain: the relay's own pages
                status, body = await ask(relay.port, get(host))
                assert status == b"HTTP/1.1 200 OK" and body.startswith(b"devtunnel relay "), (host, body)
            assert (await ask(relay.port, get(b"nobody.tunnel.test")))[0] == b"HTTP/1.1 404 Not Found"
        finally:
            await agent.close()
