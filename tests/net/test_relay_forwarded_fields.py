"""The relay's word on where a request came from: a public client's own ``Forwarded``,
``X-Real-IP`` and ``X-Forwarded-Host``/``-Proto``/``-Port`` never reach the local service; the
relay's ``X-Forwarded-Host`` and ``-Proto`` do (it sets no ``Forwarded``, ``X-Real-IP`` or
``X-Forwarded-Port``: they cost every request, and its ``X-Forwarded-*`` say it all).

Found by review: the relay replaced a client's X-Forwarded-Host and -Proto but passed its
``Forwarded: for=1.2.3.4;host=evil.example;proto=https``, ``X-Real-IP`` and ``X-Forwarded-Port``
on; Rack 3 (Rails) and Spring's ForwardedHeaderFilter read Forwarded first, so any client chose
the host of the app's password-reset links and the address it logged.

A real relay and agent on loopback, tunnel ``app`` to a local service recording every header it
gets; each request carries the forged fields, on the first request of a connection and on a
kept-alive one, by the relay's direct path (a GET) and its ASGI path (``Expect: 100-continue``),
from an IPv4 and an IPv6 client, through a port a ``--via`` provider forwards to, and in a
WebSocket handshake.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.net.head_fixtures import Seen, SeenRequest, recording_service
from tests.net.tunnel_fixtures import Harness, parse_response, relay_and_agent

FORGED = (
    b"Forwarded: for=1.2.3.4;host=evil.example;proto=https\r\nX-Real-IP: 9.9.9.9\r\nX-Forwarded-Port: 8443\r\n"
    b"X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nx-real-ip: 9.9.9.8\r\nFORWARDED: for=1.2.3.5\r\n"
)
FORGED_VALUES = (b"evil.example", b"9.9.9.9", b"9.9.9.8", b"1.2.3.4", b"1.2.3.5", b"8443")
RELAY_SET = (b"forwarded", b"x-real-ip", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-port")
UPGRADE = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)


@pytest.fixture
def service() -> Iterator[tuple[int, Seen]]:
    with recording_service() as recorded:
        yield recorded


@pytest.fixture(params=["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
async def tunnel(request: pytest.FixtureRequest, tmp_path: Path, service: tuple[int, Seen]) -> AsyncIterator[Harness]:
    async with relay_and_agent(tmp_path, relay_host=request.param) as harness:
        await harness.start(str(service[0]), name="app")
        yield harness


def relays_own(seen: SeenRequest) -> dict[bytes, list[bytes]]:
    """The values of each header of the relay's set the service got (repeats too)."""
    return {name: seen.header(name) for name in RELAY_SET}


def said(host: bytes, proto: bytes = b"http") -> dict[bytes, list[bytes]]:
    """What the relay says of a request to ``host`` over ``proto``: once each, and nothing else of the set."""
    return {
        b"forwarded": [],
        b"x-real-ip": [],
        b"x-forwarded-host": [host],
        b"x-forwarded-proto": [proto],
        b"x-forwarded-port": [],
    }


async def exchange_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes = b"") -> bytes:
    """Send one request on an open connection and read its response (framed by Content-Length).
    With ``Expect: 100-continue`` in ``head`` the body goes once the relay says 100 (the relay's
    ASGI path reads it)."""
    writer.write(head)
    if b"expect: 100-continue" in head.lower():
        interim = await reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100"), interim
    writer.write(body)
    await writer.drain()
    answer = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", answer)
    assert length is not None, answer
    return answer + await reader.readexactly(int(length[1]))


def request_head(host: bytes, *, asgi: bool, close: bool, extra: bytes = b"") -> bytes:
    method = b"POST /reset?to=me HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n" if asgi else b"GET /x HTTP/1.1\r\n"
    return method + b"Host: " + host + b"\r\n" + FORGED + extra + (b"Connection: close\r\n" if close else b"") + b"\r\n"


@pytest.mark.parametrize("asgi", [False, True], ids=["direct", "asgi"])
async def test_a_clients_forwarded_fields_never_reach_the_app_the_relays_do_on_every_request_of_a_connection(
    tunnel: Harness, service: tuple[int, Seen], asgi: bool
) -> None:
    relay_host = tunnel.relay.settings.host
    client = relay_host.encode()  # the relay listens on loopback, and the client connects from it
    host = tunnel.host("app").encode()
    reader, writer = await asyncio.open_connection(relay_host, tunnel.relay.port)
    try:
        for close in (False, True):  # the first request of the connection, then one on it kept alive
            answer = await exchange_on(reader, writer, request_head(host, asgi=asgi, close=close), b"hello" if asgi else b"")
            assert answer.startswith(b"HTTP/1.1 200"), answer
    finally:
        writer.close()
    connections, requests, raw = service[1].snapshot()
    assert len(requests) == 2
    for seen in requests:
        assert relays_own(seen) == said(host)
        assert seen.header(b"x-forwarded-for") == [client]
    for forged in FORGED_VALUES:
        assert forged not in raw
    # The capture holds what the service got, as it holds X-Forwarded-Host; the address is the same.
    for record in await tunnel.exchanges(2):
        assert record.remote_addr == relay_host
        assert {name: [v.encode() for v in record.request.headers.get_all(name.decode())] for name in RELAY_SET} == said(
            host
        )


async def test_a_websocket_handshake_gets_the_relays_forwarded_fields_and_none_of_the_clients(
    tunnel: Harness, service: tuple[int, Seen]
) -> None:
    relay_host = tunnel.relay.settings.host
    host = tunnel.host("app").encode()
    reader, writer = await asyncio.open_connection(relay_host, tunnel.relay.port)
    try:
        writer.write(b"GET /cable HTTP/1.1\r\nHost: " + host + b"\r\n" + FORGED + UPGRADE + b"\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read(-1)  # the service answers 200, not 101: the relay says so and closes
    finally:
        writer.close()
    assert parse_response(raw)[0] == 200, raw
    _, [seen], everything = service[1].snapshot()
    assert seen.header(b"upgrade") == [b"websocket"]
    assert relays_own(seen) == said(host)
    for forged in FORGED_VALUES:
        assert forged not in everything


@pytest.mark.parametrize("asgi", [False, True], ids=["direct", "asgi"])
async def test_behind_a_via_provider_every_field_names_the_client_its_edge_found(
    tmp_path: Path, service: tuple[int, Seen], asgi: bool
) -> None:
    """A port a ``--via`` provider forwards to (cloudflared: Cloudflare's edge appends the client's
    address to X-Forwarded-For): the capture records that address, the one the rules judge, not
    cloudflared's loopback one, nor one the client wrote in Forwarded or X-Real-IP."""
    async with relay_and_agent(tmp_path) as tunnel:
        await tunnel.start(str(service[0]), name="app")
        port = await tunnel.relay.pin("app", forwarded=True)
        host = b"app.example.test"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for close in (False, True):
                edge = b"X-Forwarded-For: 6.6.6.6, 203.0.113.50\r\n"  # the client's forgery, then the edge's entry
                answer = await exchange_on(reader, writer, request_head(host, asgi=asgi, close=close, extra=edge),
                                           b"hello" if asgi else b"")
                assert answer.startswith(b"HTTP/1.1 200"), answer
        finally:
            writer.close()
        records = await tunnel.exchanges(2)
    _, requests, raw = service[1].snapshot()
    assert len(requests) == 2
    for seen in requests:
        assert relays_own(seen) == said(host)
        assert seen.header(b"x-forwarded-for") == [b"6.6.6.6, 203.0.113.50, 127.0.0.1"]
    for forged in FORGED_VALUES:
        assert forged not in raw
    assert [record.remote_addr for record in records] == ["203.0.113.50"] * 2


async def test_behind_a_trusted_proxy_serving_https_the_fields_say_https_and_the_proxys_client(
    tmp_path: Path, service: tuple[int, Seen]
) -> None:
    """``--public-url https://...`` and ``--trusted-proxy``: the scheme is the public one, and
    the client's own fields are gone there too."""
    settings = {"public_url": "https://tunnel.example.test", "trusted_proxies": ["127.0.0.1/32"]}
    async with relay_and_agent(tmp_path, **settings) as tunnel:
        await tunnel.start(str(service[0]), name="app")
        host = b"app.localhost"
        reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.relay.port)
        try:
            extra = b"X-Forwarded-For: 2001:db8::5\r\n"
            answer = await exchange_on(reader, writer, request_head(host, asgi=False, close=True, extra=extra))
            assert answer.startswith(b"HTTP/1.1 200"), answer
        finally:
            writer.close()
    _, [seen], _ = service[1].snapshot()
    assert relays_own(seen) == said(host, b"https")
