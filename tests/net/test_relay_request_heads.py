"""What the relay lets through to a tunnel: only origin-form targets (absolute-form read as a
server reads it, its authority the Host), one Host, no trailers as headers, no upgrade request
with a body.

A real relay and agent on loopback, tunnel ``victim`` to a recording local service, and a
second local service on another port that must never get a connection (the shape of the
server-side request forgery where ``*@127.0.0.1:PORT/x`` reached any address).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvicorn

from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.service import AgentService
from devtunnel.relay.server import Relay
from devtunnel.relay.settings import RelaySettings
from tests.helpers import async_wait_for
from tests.net.head_fixtures import FORGED, Seen, reads_spied, recording_service
from tests.net.tunnel_fixtures import TOKEN, Harness, parse_response, raw_request, relay_and_agent

UPGRADE = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)


@pytest.fixture
def victim_service() -> Iterator[tuple[int, Seen]]:
    with recording_service(b"victim") as service:
        yield service


@pytest.fixture
def second_service() -> Iterator[tuple[int, Seen]]:
    with recording_service(b"SECRET from the second service") as service:
        yield service


@pytest.fixture
async def tunnel(tmp_path: Path, victim_service: tuple[int, Seen]) -> AsyncIterator[Harness]:
    async with relay_and_agent(tmp_path) as harness:
        await harness.start(str(victim_service[0]), name="victim")
        yield harness


def hostile_targets(port: int) -> list[bytes]:
    """Targets that name another host:port once pasted after an authority, or are no path at all."""
    return [
        b"*@127.0.0.1:%d/internal-admin?secret=1" % port,
        b"@127.0.0.1:%d/x" % port,
        b"http://*@127.0.0.1:%d/x" % port,
        b"http://@127.0.0.1:%d/x" % port,
        b"ftp://127.0.0.1:%d/x" % port,
        b"127.0.0.1:%d" % port,
        b"*",
    ]


def head(method: bytes, target: bytes, host: bytes, extra: bytes = b"") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n" % (method, target, host, extra)


def assert_untouched(victim: Seen, second: Seen) -> None:
    assert victim.snapshot()[1] == [], "the tunnel's local service got a refused request"
    assert second.snapshot()[0] == 0, "the second local service got a connection"


@pytest.mark.parametrize("upgrade", [False, True], ids=["plain", "upgrade"])
async def test_targets_that_are_not_a_path_get_400_and_reach_no_service(
    tunnel: Harness, victim_service: tuple[int, Seen], second_service: tuple[int, Seen], upgrade: bool
) -> None:
    host = tunnel.host("victim").encode()
    extra = UPGRADE.replace(b"Connection: Upgrade\r\n", b"") if upgrade else b""
    connection = b"Upgrade" if upgrade else b"close"
    for method in (b"GET", b"CONNECT"):
        for target in hostile_targets(second_service[0]):
            request = b"%s %s HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\n%s\r\n" % (method, target, host, connection, extra)
            raw = await raw_request(tunnel.relay.port, request)  # returns once the relay closed
            status, _, body = parse_response(raw)
            assert status == 400, (method, target, raw)
            assert b"SECRET" not in raw and b"victim" not in raw
            # The parser refuses some forms itself (``@host/x``, ``host:port`` with GET).
            assert b"not a path" in body or b"only allowed with OPTIONS" in body or b"CONNECT" in body \
                or b"user info (name@) in its authority" in body or body == b"Invalid HTTP request received.", body
    assert_untouched(victim_service[1], second_service[1])


async def test_the_reported_reproduction_gets_400_and_no_traceback(
    tunnel: Harness, victim_service: tuple[int, Seen], second_service: tuple[int, Seen],
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = b"*@127.0.0.1:%d/internal-admin?secret=1" % second_service[0]
    request = b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (target, tunnel.host("victim").encode(), UPGRADE)
    status, _, body = parse_response(await raw_request(tunnel.relay.port, request))
    assert status == 400
    assert body.startswith(b"the request target '*@127.0.0.1:")
    # Absolute-form with upgrade headers made the agent log a ValueError traceback. Its
    # authority is the Host now: no tunnel is named x.
    request = b"GET http://x/ HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (tunnel.host("victim").encode(), UPGRADE)
    assert parse_response(await raw_request(tunnel.relay.port, request))[0] == 404
    assert_untouched(victim_service[1], second_service[1])
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize("arrives", ["whole", "later"])
async def test_a_hostile_target_with_a_body_is_refused_however_the_body_arrives(
    tunnel: Harness, victim_service: tuple[int, Seen], second_service: tuple[int, Seen], arrives: str
) -> None:
    """A body that came with the head would be forwarded from the protocol's callback; one
    still arriving by an ASGI task: both meet the same check, before either."""
    target = b"*@127.0.0.1:%d/hook" % second_service[0]
    request = head(b"POST", target, tunnel.host("victim").encode(), b"Content-Length: 5\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.relay.port)
    try:
        writer.write(request + (b"hello" if arrives == "whole" else b""))
        await writer.drain()
        if arrives == "later":
            writer.write(b"hel")
            await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read(-1)
    finally:
        writer.close()
    assert parse_response(raw)[0] == 400
    assert_untouched(victim_service[1], second_service[1])


async def test_a_hostile_request_pipelined_behind_a_good_one_ends_the_connection_after_its_answer(
    tunnel: Harness, victim_service: tuple[int, Seen], second_service: tuple[int, Seen]
) -> None:
    host = tunnel.host("victim").encode()
    good = b"GET /ok HTTP/1.1\r\nHost: %s\r\n\r\n" % host
    bad = b"GET *@127.0.0.1:%d/x HTTP/1.1\r\nHost: %s\r\n\r\n" % (second_service[0], host)
    raw = await raw_request(tunnel.relay.port, good + bad)
    # One whole answer (a 400 written now would have landed inside it), then the relay closes.
    assert raw.count(b"HTTP/1.1 ") == 1 and raw.endswith(b"victim"), raw
    assert [r.target for r in victim_service[1].snapshot()[1]] == [b"/ok"]
    assert second_service[1].snapshot()[0] == 0


@pytest.mark.parametrize("upgrade", [False, True], ids=["plain", "upgrade"])
async def test_a_target_starting_with_two_slashes_is_a_path_for_the_tunnels_own_service(
    tunnel: Harness, victim_service: tuple[int, Seen], second_service: tuple[int, Seen], upgrade: bool
) -> None:
    target = b"//127.0.0.1:%d/x?y=1" % second_service[0]
    request = head(b"GET", target, tunnel.host("victim").encode(), UPGRADE.replace(b"Connection: Upgrade\r\n", b"") if upgrade else b"")
    if upgrade:
        request = request.replace(b"Connection: close", b"Connection: Upgrade")
    raw = await raw_request(tunnel.relay.port, request)
    assert parse_response(raw)[0] == 200, raw
    assert raw.endswith(b"victim")
    requests = victim_service[1].snapshot()[1]
    assert [r.target for r in requests] == [target]
    assert second_service[1].snapshot()[0] == 0


async def test_options_star_reaches_the_service_as_star(tunnel: Harness, victim_service: tuple[int, Seen]) -> None:
    raw = await raw_request(tunnel.relay.port, head(b"OPTIONS", b"*", tunnel.host("victim").encode()))
    assert parse_response(raw)[0] == 200
    assert [(r.method, r.target) for r in victim_service[1].snapshot()[1]] == [(b"OPTIONS", b"*")]


# -- absolute-form targets: read as a server reads them (RFC 9112 3.2.2) --------------------------------
@pytest.mark.parametrize("body", [False, True], ids=["get", "post"])
async def test_an_absolute_form_target_reaches_the_tunnels_service_as_a_path_with_its_authority_as_host(
    tunnel: Harness, victim_service: tuple[int, Seen], second_service: tuple[int, Seen], body: bool
) -> None:
    # The authority names the tunnel's host on the second service's port: the request still
    # goes to the tunnel's own local service, never to that port.
    authority = b"victim.localhost:%d" % second_service[0]
    extra = b"Content-Length: 5\r\n" if body else b""
    request = head(b"POST" if body else b"GET", b"http://" + authority + b"/hooks/x?a=1&b=%2F", b"ignored.example",
                   extra) + (b"hello" if body else b"")
    raw = await raw_request(tunnel.relay.port, request)
    assert parse_response(raw)[:3:2] == (200, b"victim"), raw
    [seen] = victim_service[1].snapshot()[1]
    assert seen.target == b"/hooks/x?a=1&b=%2F"
    assert seen.header(b"host") == [authority]  # the authority replaces the Host header
    assert seen.header(b"x-forwarded-host") == [authority]
    assert seen.body == (b"hello" if body else b"")
    assert second_service[1].snapshot()[0] == 0, "the authority's port got a connection"
    [record] = await tunnel.exchanges(1)
    assert record.request.target == b"/hooks/x?a=1&b=%2F"


@pytest.mark.parametrize(("target", "sent"), [
    (b"HTTP://victim.localhost", b"/"),  # the scheme in any case; an empty path is /
    (b"https://victim.localhost?q=1", b"/?q=1"),
    (b"http://victim.localhost/a#frag", b"/a"),
])
async def test_absolute_form_targets_without_a_host_header_are_read_as_a_server_reads_them(
    tunnel: Harness, victim_service: tuple[int, Seen], target: bytes, sent: bytes
) -> None:
    port = tunnel.relay.port
    request = b"GET %s HTTP/1.1\r\nConnection: close\r\n\r\n" % target.replace(b"localhost", b"localhost:%d" % port)
    raw = await raw_request(port, request)
    assert parse_response(raw)[0] == 200, raw
    [seen] = victim_service[1].snapshot()[1]
    assert (seen.target, seen.header(b"host")) == (sent, [b"victim.localhost:%d" % port])


async def test_curl_using_the_relay_as_its_proxy_reaches_the_tunnels_service(
    tunnel: Harness, victim_service: tuple[int, Seen], second_service: tuple[int, Seen]
) -> None:
    # curl -x sends absolute-form (GET http://victim.localhost:PORT/x HTTP/1.1), naming here the
    # second service's port: the tunnel's own service answers, the second gets nothing.
    url = f"http://victim.localhost:{second_service[0]}/via-proxy?a=1"
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", "-x", f"http://127.0.0.1:{tunnel.relay.port}", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert (process.returncode, out) == (0, b"victim"), err
    [seen] = victim_service[1].snapshot()[1]
    assert (seen.target, seen.header(b"host")) == (b"/via-proxy?a=1", [b"victim.localhost:%d" % second_service[0]])
    assert second_service[1].snapshot()[0] == 0


async def test_options_for_a_whole_server_in_absolute_form_reaches_the_service_as_star(
    tunnel: Harness, victim_service: tuple[int, Seen]
) -> None:
    authority = b"victim.localhost:%d" % tunnel.relay.port
    raw = await raw_request(tunnel.relay.port, head(b"OPTIONS", b"http://" + authority, authority))
    assert parse_response(raw)[0] == 200, raw
    assert [(r.method, r.target) for r in victim_service[1].snapshot()[1]] == [(b"OPTIONS", b"*")]


async def test_an_absolute_form_target_naming_another_host_goes_by_that_host_and_nowhere_else(
    tunnel: Harness, victim_service: tuple[int, Seen], second_service: tuple[int, Seen]
) -> None:
    # The Host says the victim's tunnel; the authority, which wins, names the second service.
    target = b"http://127.0.0.1:%d/internal-admin?secret=1" % second_service[0]
    raw = await raw_request(tunnel.relay.port, head(b"GET", target, tunnel.host("victim").encode()))
    status, _, body = parse_response(raw)
    assert status == 404 and body.startswith(b"nothing at /internal-admin on 127.0.0.1:"), raw
    assert_untouched(victim_service[1], second_service[1])


async def test_the_embedded_relay_sends_an_absolute_form_target_naming_any_host_to_its_own_service_only(
    victim_service: tuple[int, Seen], second_service: tuple[int, Seen]
) -> None:
    """The embedded relay routes a loopback host to its tunnel: an authority naming another port
    still reaches only the tunnel's configured local service (one naming another machine is
    not a Host it answers: 421)."""
    service = AgentService()
    try:
        await service.start_tunnel(TunnelConfig(target=str(victim_service[0]), name="emb"))
        relay = service.embedded_relay
        assert relay is not None
        for authority in (b"127.0.0.1:%d" % second_service[0], b"[::1]:22"):
            raw = await raw_request(relay.port, head(b"GET", b"http://%s/x" % authority, b"emb.localhost"))
            assert parse_response(raw)[:3:2] == (200, b"victim"), (authority, raw)
        raw = await raw_request(relay.port, head(b"GET", b"http://10.0.0.1:%d/x" % second_service[0], b"emb.localhost"))
        assert parse_response(raw)[0] == 421, raw
        assert [r.header(b"host") for r in victim_service[1].snapshot()[1]] == [
            [b"127.0.0.1:%d" % second_service[0]], [b"[::1]:22"]]
        assert second_service[1].snapshot()[0] == 0, "the authority's port got a connection"
    finally:
        await service.stop()


@pytest.mark.parametrize(("target", "why"), [
    (b"http://evil@victim.localhost/x", b"holds user info (name@) in its authority"),
    (b"http:///x", b"does not name a host"),
    (b"http://:80/x", b"does not name a host"),
    (b"http://victim.localhost:80:81/x", b"does not name a host"),
    (b"http://victim.localhost:http/x", b"does not name a host"),
])
async def test_a_malformed_absolute_form_target_gets_400_saying_why(
    tunnel: Harness, victim_service: tuple[int, Seen], target: bytes, why: bytes
) -> None:
    raw = await raw_request(tunnel.relay.port, head(b"GET", target, tunnel.host("victim").encode()))
    status, _, body = parse_response(raw)
    assert status == 400 and why in body, raw
    assert victim_service[1].snapshot()[0] == 0


# -- upgrade requests with a body (they were never answered nor timed out) ------------------------
def _upgrade_with_body(method: bytes, host: bytes, path: bytes, framing: str) -> bytes:
    if framing == "length":
        return b"%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: 10\r\n\r\nabc" % (method, path, host, UPGRADE)
    return b"%s %s HTTP/1.1\r\nHost: %s\r\n%sTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n" % (method, path, host, UPGRADE)


async def test_upgrade_requests_with_a_body_get_400_and_their_connections_close(
    tunnel: Harness, victim_service: tuple[int, Seen]
) -> None:
    server = tunnel.relay._server
    assert server is not None
    connections = server.server_state.connections
    baseline = len(connections)
    port = tunnel.relay.port
    hosts = [tunnel.host("victim").encode(), b"localhost:%d" % port, b"127.0.0.1:%d" % port]
    requests = [
        _upgrade_with_body(method, host, path, framing)
        for method in (b"GET", b"POST")
        for host in hosts
        for path in (b"/ws", b"/_devtunnel/connect")
        for framing in ("length", "chunked")
    ]
    # Every request is answered and its connection closed by the relay (raw_request reads to EOF).
    answers = await asyncio.gather(*(raw_request(port, request) for request in requests))
    for request, raw in zip(requests, answers):
        status, _, body = parse_response(raw)
        assert status == 400, (request, raw)
        assert body == b"an upgrade request must not carry a body\n"
    await async_wait_for(lambda: len(connections) == baseline, what="the relay's connections to return to baseline")
    assert victim_service[1].snapshot()[0] == 0


async def test_an_upgrade_to_another_protocol_is_answered_as_http_then_the_connection_closes(
    tunnel: Harness, victim_service: tuple[int, Seen]
) -> None:
    """``Upgrade: h2c`` (curl --http2 on http://): the parser cannot read past it, so the
    connection closes after the answer, whatever the client sends after."""
    server = tunnel.relay._server
    assert server is not None
    baseline = len(server.server_state.connections)
    reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.relay.port)
    try:
        writer.write(b"GET /h2 HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                     b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n" % tunnel.host("victim").encode())
        writer.write(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")  # not HTTP any more once upgraded: ignored
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read(-1)
    finally:
        writer.close()
    status, _, body = parse_response(raw)
    assert (status, body) == (200, b"victim")
    assert [r.target for r in victim_service[1].snapshot()[1]] == [b"/h2"]
    await async_wait_for(lambda: len(server.server_state.connections) == baseline, what="the connection to go")


# -- trailers and duplicate Host ------------------------------------------------------------------------
@pytest.mark.parametrize("arrives", ["one write", "trailer later"])
async def test_chunked_trailer_fields_never_reach_the_service_as_headers(
    tunnel: Harness, victim_service: tuple[int, Seen], arrives: str
) -> None:
    start = (b"POST /hook HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
             b"5\r\nhello\r\n" % tunnel.host("victim").encode())
    trailer = b"0\r\nHost: admin.internal\r\nAuthorization: Bearer forged\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.relay.port)
    try:
        if arrives == "one write":
            writer.write(start + trailer)
        else:
            writer.write(start)
            await writer.drain()
            await async_wait_for(lambda: victim_service[1].snapshot()[0] >= 1, what="the request to be forwarded")
            writer.write(trailer)
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read(-1)
    finally:
        writer.close()
    assert parse_response(raw)[0] == 200
    _, requests, received = victim_service[1].snapshot()
    [request] = requests
    assert request.header(b"host") == [tunnel.host("victim").encode()]
    assert request.header(b"authorization") == []
    for forged in FORGED:
        assert forged not in received


@asynccontextmanager
async def small_head_tunnel(port: int) -> AsyncIterator[Relay]:
    """A relay whose heads (and so trailer sections) are bounded at 4 KiB, tunnel ``victim`` to ``port``."""
    relay = Relay(RelaySettings(port=0, domain="localhost", tokens=[TOKEN], max_head=4096))
    await relay.start()
    service = AgentService(relay=f"ws://127.0.0.1:{relay.port}", token=TOKEN)
    try:
        await service.start_tunnel(TunnelConfig(target=str(port), name="victim"))
        yield relay
    finally:
        await service.stop()
        await relay.stop()


LONG_TRAILER_START = (b"POST /hook HTTP/1.1\r\nHost: victim.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"2\r\nhi\r\n0\r\nX-Long: ")


@pytest.mark.parametrize("writes", ["1 KiB writes", "one write"])
async def test_a_trailer_section_larger_than_a_head_drops_the_connection(writes: str) -> None:
    """However the relay's reads cut the request (the head, body, last chunk and the start of the
    trailer in one read, or not), the trailer's bytes count: past the bound the connection drops."""
    with recording_service() as (port, seen):
        async with small_head_tunnel(port) as relay:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            try:
                async with asyncio.timeout(10):
                    if writes == "one write":
                        writer.write(LONG_TRAILER_START + b"a" * 64 * 1024)
                    else:
                        writer.write(LONG_TRAILER_START)
                        for _ in range(64):  # 64 KiB of one trailer line, far over the 4 KiB limit
                            writer.write(b"a" * 1024)
                            await writer.drain()
                    await writer.drain()
                    assert await reader.read(-1) == b""
            except ConnectionError:
                pass  # the relay dropped the connection while we were writing, or reset it
            finally:
                writer.close()
        assert seen.snapshot()[1] == []  # the request never ended: its trailer was cut off


async def test_a_trailer_over_the_bound_in_the_read_that_holds_the_whole_request_drops_the_connection() -> None:
    """The head, the body, the last chunk and 32 KiB of a trailer line reach the relay in ONE
    read (written while the loop that runs the relay is held here), and the client then waits
    for an answer: the relay must count that read's trailer bytes and drop the connection,
    not wait for a read that never comes."""
    request = LONG_TRAILER_START + b"a" * 32 * 1024
    with recording_service() as (port, seen), reads_spied() as reads:
        async with small_head_tunnel(port) as relay:
            sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
            client_port = sock.getsockname()[1]
            reads.forget(client_port)
            sock.sendall(request)  # blocking: the relay reads nothing until all of it is sent
            reader, writer = await asyncio.open_connection(sock=sock)
            try:
                async with asyncio.timeout(5):
                    answer = await reader.read(-1)
            except ConnectionError:
                answer = b""  # reset: dropped
            finally:
                writer.close()
        assert reads.sizes(client_port) == [len(request)], "the relay did not get the request in one read"
        assert answer == b""
        assert seen.snapshot()[1] == []


async def test_a_chunked_upload_whose_reads_end_after_chunk_headers_goes_through() -> None:
    """Only trailer bytes count towards the trailer bound: a read ending just after a chunk
    header (body bytes, then the next chunk's size line) is an ordinary upload."""
    with recording_service() as (port, seen):
        async with small_head_tunnel(port) as relay:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"POST /upload HTTP/1.1\r\nHost: victim.localhost\r\nTransfer-Encoding: chunked\r\n"
                         b"Connection: close\r\n\r\n2000\r\n")
            for i in range(40):  # 8 KiB of body (twice the head limit), then the next size line
                writer.write(bytes([65 + i % 26]) * 0x2000 + b"\r\n2000\r\n")
                await writer.drain()
            writer.write(b"z" * 0x2000 + b"\r\n0\r\n\r\n")
            async with asyncio.timeout(10):
                raw = await reader.read(-1)
            writer.close()
        assert parse_response(raw)[0] == 200
        assert seen.snapshot()[2].count(b"z" * 0x2000) == 1


@pytest.mark.parametrize("arrives", ["no body", "body later", "upgrade"])
async def test_two_host_headers_get_400(
    tunnel: Harness, victim_service: tuple[int, Seen], arrives: str
) -> None:
    host = tunnel.host("victim").encode()
    extra = {"no body": b"", "body later": b"Content-Length: 5\r\n", "upgrade": UPGRADE}[arrives]
    request = b"POST /x HTTP/1.1\r\nHost: %s\r\nHost: admin.internal\r\n%s\r\n" % (host, extra)
    raw = await raw_request(tunnel.relay.port, request)
    status, _, body = parse_response(raw)
    assert (status, body) == (400, b"the request has more than one Host header\n")
    assert victim_service[1].snapshot()[0] == 0



def hostile_hosts(relay_port: int, name: str) -> list[bytes]:
    """Host headers holding what a host never does: user info, a path, a backslash, a space, a tab
    (other control bytes llhttp refuses itself), a port with no host before it."""
    named = b"%s.localhost:%d" % (name.encode(), relay_port)
    return [b"evil@" + named, b"a@127.0.0.1:%d" % relay_port, named + b"/x", named.replace(b".", b"\\", 1),
            b"a b." + named, b"a\t" + named, b":%d" % relay_port, b":"]


@pytest.mark.parametrize("upgrade", [False, True], ids=["plain", "upgrade"])
async def test_a_host_header_that_is_not_a_host_gets_400_and_reaches_no_service(
    tunnel: Harness, victim_service: tuple[int, Seen], upgrade: bool
) -> None:
    extra = UPGRADE.replace(b"Connection: Upgrade\r\n", b"") if upgrade else b""
    for host in hostile_hosts(tunnel.relay.port, "victim"):
        request = b"GET /x HTTP/1.1\r\nHost: %s\r\n%sConnection: %s\r\n\r\n" % (
            host, extra, b"Upgrade" if upgrade else b"close")
        status, _, body = parse_response(await raw_request(tunnel.relay.port, request))
        assert status == 400 and body.startswith(b"the Host header "), (host, status, body)
    assert victim_service[1].snapshot()[0] == 0
    # A plain host still reaches the service.
    status, _, body = parse_response(await raw_request(tunnel.relay.port, head(b"GET", b"/ok", tunnel.host("victim").encode())))
    assert (status, body) == (200, b"victim")


@pytest.mark.parametrize("host", [b":%d", b":"], ids=["port", "colon"])
async def test_a_host_header_with_a_port_and_no_host_gets_400_naming_it(
    tunnel: Harness, victim_service: tuple[int, Seen], host: bytes
) -> None:
    """An empty Host is allowed (RFC 9112 3.2); a port alone names no host, and reaches nothing."""
    value = host % tunnel.relay.port if b"%" in host else host
    status, _, body = parse_response(await raw_request(tunnel.relay.port, head(b"GET", b"/x", value)))
    assert (status, body) == (400, b"the Host header '%s' has a port but no host name or address before it\n" % value)
    assert victim_service[1].snapshot()[0] == 0


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        (b"a\xffb", "the Host header 'a\ufffdb' holds byte 0xff"),
        (b"a\\b", "the Host header 'a\\\\b' holds '\\\\'"),
        (b"a\xe2\x80\xaeb", "the Host header 'a\\u202eb' holds byte 0xe2"),
    ],
    ids=["not-utf8", "backslash", "bidi"],
)
async def test_a_refused_host_is_escaped_once_in_the_400_text(
    tunnel: Harness, victim_service: tuple[int, Seen], host: bytes, shown: str
) -> None:
    """The client's terminal shows the plain-text body as it is: no raw control or bidi
    character, and no escape of an escape (repr() of backslashreplace gave 'a\\\\xffb')."""
    status, _, body = parse_response(await raw_request(tunnel.relay.port, head(b"GET", b"/x", host)))
    assert status == 400 and body.decode("utf-8").startswith(shown), body
    assert body.isascii() or "\u202e" not in body.decode("utf-8")


async def test_the_embedded_relay_refuses_a_host_header_that_is_not_a_host_before_routing(
    victim_service: tuple[int, Seen]
) -> None:
    """The embedded relay routes any host to its tunnel: ``a@127.0.0.1`` must not get there."""
    service = AgentService()
    try:
        await service.start_tunnel(TunnelConfig(target=str(victim_service[0]), name="emb"))
        relay = service.embedded_relay
        assert relay is not None
        for host in hostile_hosts(relay.port, "emb"):
            status, _, body = parse_response(await raw_request(relay.port, head(b"GET", b"/x", host)))
            assert status == 400 and body.startswith(b"the Host header "), (host, status, body)
        assert victim_service[1].snapshot()[0] == 0
        for host in (b"emb.localhost:%d" % relay.port, b"127.0.0.1:%d" % relay.port):
            status, _, body = parse_response(await raw_request(relay.port, head(b"GET", b"/ok", host)))
            assert (status, body) == (200, b"victim"), host
    finally:
        await service.stop()


# -- the ASGI application keeps the rule when served without the relay's HTTP protocol ------------------
async def test_the_relay_application_refuses_bad_heads_under_a_stock_server(
    victim_service: tuple[int, Seen], second_service: tuple[int, Seen]
) -> None:
    relay = Relay(RelaySettings(port=0, domain="localhost", tokens=[TOKEN]))
    config = uvicorn.Config(relay, http="httptools", ws="websockets-sansio", lifespan="off", log_config=None,
                            host="127.0.0.1", port=0)
    server = uvicorn.Server(config)
    serving = asyncio.get_running_loop().create_task(server.serve())
    service = AgentService(token=TOKEN)
    try:
        await async_wait_for(lambda: server.started, what="uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        service.default_relay = f"ws://127.0.0.1:{port}"
        await service.start_tunnel(TunnelConfig(target=str(victim_service[0]), name="victim"))
        host = b"victim.localhost:%d" % port
        for target in (b"*@127.0.0.1:%d/internal-admin" % second_service[0], b"@127.0.0.1:%d/x" % second_service[0]):
            for extra in (b"", UPGRADE):
                request = b"GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: %s\r\n\r\n" % (
                    target, host, extra.replace(b"Connection: Upgrade\r\n", b""), b"Upgrade" if extra else b"close")
                raw = await raw_request(port, request)
                assert parse_response(raw)[0] == 400, (target, raw)
        raw = await raw_request(port, b"GET /x HTTP/1.1\r\nHost: %s\r\nHost: admin.internal\r\nConnection: close\r\n\r\n" % host)
        assert parse_response(raw)[0] == 400
        assert_untouched(victim_service[1], second_service[1])
    finally:
        await service.stop()
        server.should_exit = True
        await serving


@pytest.mark.parametrize("method", [b"FOO", b"BREW", b"purge", b"X-CUSTOM-METHOD"])
async def test_a_method_the_parser_does_not_know_gets_501_naming_the_limit(
    tunnel: Harness, victim_service: tuple[int, Seen], second_service: tuple[int, Seen], method: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = await raw_request(tunnel.relay.port, head(method, b"/x", tunnel.host("victim").encode()))
    status, _, body = parse_response(raw)
    assert status == 501, raw
    assert b"does not carry this request method" in body and b"docs/relay.md" in body
    assert_untouched(victim_service[1], second_service[1])
    assert "Traceback" not in caplog.text


async def test_a_method_the_parser_knows_reaches_the_service(tunnel: Harness, victim_service: tuple[int, Seen]) -> None:
    raw = await raw_request(tunnel.relay.port, head(b"PURGE", b"/cache/x", tunnel.host("victim").encode()))
    status, _, body = parse_response(raw)
    assert status == 200 and body == b"victim", raw
    seen = victim_service[1].snapshot()[1][-1]
    assert (seen.method, seen.target) == (b"PURGE", b"/cache/x")
