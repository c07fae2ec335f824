"""The open public connections of one client address, over all tunnels (``relay.descriptors``),
and a request body's average rate (``HttpForwarder.body_min_rate``), on a relay in this process.

Before, one address could hold its share of every tunnel at once (a slow body on each of 256
streams per tunnel, a byte every 29 s keeping each alive for ever): 1,003 descriptors of a
relay limited to 1,024, and the next client of another user's tunnel was reset. Now an address
holds at most ``connections_per_address`` connections in any state (429 beyond, unread), other
addresses are served meanwhile, and a body trickling in is dropped once it falls below the rate.

Real sockets: the attacker connects from 127.0.0.3, another client from 127.0.0.2, agents
from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from pathlib import Path

import pytest
import trustme

from devtunnel.relay.descriptors import DescriptorWatch, OpenConnections, default_per_address, open_file_limit
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.server import Relay
from devtunnel.relay.settings import RelaySettings, address_connections
from tests.helpers import async_wait_for
from tests.net._relay_agent import AgentRequest, connect_agent, echo, running_relay
from tests.net.test_relay_pending import closed, head_of, upgrade
from tests.net.tunnel_fixtures import parse_response

ATTACKER = "127.0.0.3"
OTHER = "127.0.0.2"
REFUSED_LINE = "open connections, the most one address may (--connections-per-address): a new one refused"

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_from(relay: Relay, address: str) -> Stream:
    return await asyncio.open_connection("127.0.0.1", relay.port, local_addr=(address, 0))


async def holding(request: AgentRequest) -> None:
    """Answers ``/slow`` only once its body came whole (never, for a body that trickles), with its
    size; the rest at once (``echo``)."""
    if request.event.target != b"/slow":
        await echo(request)
        return
    try:
        body = await request.body()
    except ConnectionResetError:
        return
    answer = b"got %d bytes" % len(body)
    request.respond(200, [(b"Content-Length", str(len(answer)).encode())])
    await request.send(answer, end=True)


async def slow_post(relay: Relay, tunnel: str, address: str = ATTACKER) -> Stream:
    """A POST announcing 100,000 bytes of body to ``tunnel`` and sending one of them."""
    reader, writer = await open_from(relay, address)
    writer.write(f"POST /slow HTTP/1.1\r\nHost: {tunnel}.localhost\r\nContent-Length: 100000\r\n\r\nx".encode())
    await writer.drain()
    return reader, writer


async def get(relay: Relay, tunnel: str, address: str) -> tuple[int, bytes]:
    reader, writer = await open_from(relay, address)
    try:
        writer.write(f"GET /fast HTTP/1.1\r\nHost: {tunnel}.localhost\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(10):
            status, _, body = parse_response(await reader.read(-1))
        return status, body
    finally:
        writer.close()


async def test_one_address_is_capped_over_all_tunnels_while_another_address_is_still_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "devtunnel.relay")
    async with running_relay(connections_per_address=6, pending_per_address=0) as relay:
        agents = [await connect_agent(relay, name=name, handler=holding) for name in ("a", "b", "c")]
        assert relay.open_connections == 0  # agents count no more once welcomed
        held = [await slow_post(relay, name) for name in ("a", "b", "c") for _ in range(2)]
        await async_wait_for(lambda: relay.requests_in_flight == 6, what="six slow bodies on three tunnels")
        assert relay.open_connections == 6

        # A 7th from the same address, to any tunnel: 429 before a byte of it is read.
        reader, writer = await open_from(relay, ATTACKER)
        writer.write(b"GET /fast HTTP/1.1\r\nHost: c.localhost\r\n\r\n")
        async with asyncio.timeout(10):
            status, headers, body = parse_response(await reader.read(-1))
        writer.close()
        assert status == 429 and (b"retry-after", b"5") in headers
        assert body == b"too many connections open from 127.0.0.3 (at most 6); try again later\n"
        assert relay.refused_for_open == 1 and relay.requests_in_flight == 6

        # Another address is served by every tunnel meanwhile.
        for name in ("a", "b", "c"):
            status, body = await get(relay, name, OTHER)
            assert status == 200 and body.startswith(b"GET /fast\nHost: " + name.encode() + b".localhost\n")

        # One of the six closed gives its place back.
        held.pop()[1].close()
        await async_wait_for(lambda: relay.open_connections == 5, what="the closed one given back")
        status, _ = await get(relay, "a", ATTACKER)
        assert status == 200

        # Refusals are logged once, then summarised: not a line per connection.
        more = [await open_from(relay, ATTACKER) for _ in range(5)]  # the first takes the place again
        await async_wait_for(lambda: relay.refused_for_open == 5, what="four more refused")
        lines = [r.getMessage() for r in caplog.records if REFUSED_LINE in r.getMessage()]
        assert lines == ["client 127.0.0.3 holds 6 open connections, the most one address may "
                         "(--connections-per-address): a new one refused"]
        for reader, writer in more[1:]:
            assert await closed(reader)  # (silent: cut after a second without a word)
            writer.close()
        more[0][1].close()
        for _, writer in held:
            writer.close()
        for agent in agents:
            await agent.close()


async def test_a_websocket_keeps_its_connections_place_until_it_closes() -> None:
    """An upgrade to the agents' door that never sends HELLO: counted as the HTTP connection it
    was (its address holds it), given back when it closes; a welcomed agent's is given back."""
    async with running_relay(connections_per_address=2, pending_per_address=0) as relay:
        ws_reader, ws_writer = await open_from(relay, ATTACKER)
        ws_writer.write(upgrade(relay.port))
        assert (await head_of(ws_reader)).startswith(b"HTTP/1.1 101")
        second = await open_from(relay, ATTACKER)
        await async_wait_for(lambda: relay.open_connections == 2, what="two open")
        third_reader, third_writer = await open_from(relay, ATTACKER)
        third_writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await head_of(third_reader)).startswith(b"HTTP/1.1 429")
        third_writer.close()
        ws_writer.close()
        await async_wait_for(lambda: relay.open_connections == 1, what="the WebSocket's place given back")
        reader, writer = await open_from(relay, ATTACKER)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert (await head_of(reader)).startswith(b"HTTP/1.1 200")
        writer.close()
        second[1].close()
        await async_wait_for(lambda: relay.open_connections == 0, what="none open")


async def test_a_tls_connection_counts_from_its_accept_and_one_past_the_cap_is_cut(tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "relay.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    async with running_relay(tls_cert=str(pem), tls_key=str(pem), connections_per_address=2, pending_per_address=0,
                             head_timeout=30) as relay:
        silent = [await open_from(relay, ATTACKER) for _ in range(2)]  # no ClientHello
        await async_wait_for(lambda: relay.open_connections == 2, what="two doors counted")
        cut_reader, cut_writer = await open_from(relay, ATTACKER)
        assert await closed(cut_reader)  # no answer a TLS client could read before its handshake
        cut_writer.close()
        assert relay.refused_for_open == 1
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port, ssl=client_tls,
                                                       server_hostname="localhost", local_addr=(OTHER, 0))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await head_of(reader)).startswith(b"HTTP/1.1 200")
        assert relay.open_connections == 3  # the handshake's place taken over by the HTTP connection
        writer.close()
        await async_wait_for(lambda: relay.open_connections == 2, what="the TLS client's place given back")
        for _, silent_writer in silent:
            silent_writer.close()
        await async_wait_for(lambda: relay.open_connections == 0, what="none open")


# -- a body's average rate ---------------------------------------------------------------------------
@pytest.mark.parametrize(("chunk", "status"), [(200, 200), (1, 408)])
async def test_a_body_must_keep_an_average_rate_once_the_grace_has_passed(chunk: int, status: int) -> None:
    """A chunk every 50 ms: 4,000 bytes a second pass a rate of 1,000 for as long as they go;
    20 bytes a second, each byte well within the body timeout, are dropped after about 0.6 s."""
    async with running_relay(body_timeout=0.6, body_min_rate=1000) as relay:
        agent = await connect_agent(relay, handler=holding)
        size = 20 * chunk if status == 200 else 100_000
        reader, writer = await open_from(relay, OTHER)
        writer.write(f"POST /slow HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: {size}\r\n"
                     f"Connection: close\r\n\r\n".encode())
        answer = asyncio.ensure_future(reader.read(-1))
        sent = 0
        async with asyncio.timeout(20):
            while not answer.done() and sent < size:
                writer.write(b"x" * chunk)
                sent += chunk
                await asyncio.wait([answer], timeout=0.05)  # (the client's pace, until the relay answers)
            got, _, body = parse_response(await answer)
        writer.close()
        assert got == status
        if status == 200:
            assert body == b"got %d bytes" % size
        else:
            assert body.startswith(b"the client sent the request body too slowly: ")
            assert sent < 100  # (dropped after a second or so at 20 bytes a second)
        await agent.close()


# -- the counts themselves -----------------------------------------------------------------------
def test_an_ipv6_client_counts_by_its_64_and_a_trusted_proxy_is_not_capped() -> None:
    transport = asyncio.BaseTransport()
    connections = OpenConnections(2, PeerErrorLog(logging.getLogger("test")),
                                  exempt=[ipaddress.ip_network("10.0.0.0/8")])
    assert connections.opened(("2001:db8::1", 1), transport) == "2001:db8::/64"
    assert connections.opened(("2001:db8::2", 1), transport) == "2001:db8::/64"
    assert connections.opened(("2001:db8::ffff", 1), transport) is None
    assert connections.opened(("2001:db8:0:1::1", 1), transport) == "2001:db8:0:1::/64"
    assert connections.opened(("::ffff:192.0.2.1", 1), transport) == "192.0.2.1"
    assert connections.opened(("192.0.2.1", 1), transport) == "192.0.2.1"
    assert connections.opened(("192.0.2.1", 1), transport) is None
    for _ in range(5):
        assert connections.opened(("10.0.0.1", 1), transport) == "10.0.0.1"
    assert connections.held_by("10.0.0.1") == 5 and connections.refused == 2 and connections.total == 10
    connections.closed("2001:db8::/64")
    assert connections.opened(("2001:db8::3", 1), transport) == "2001:db8::/64"


def test_the_default_is_a_quarter_of_the_open_file_limit_within_bounds() -> None:
    assert default_per_address(1024) == 256
    assert default_per_address(40) == 16
    assert default_per_address(1 << 20) == 4096
    limit = open_file_limit()
    assert address_connections(RelaySettings()) == (default_per_address(limit) if limit else 4096)
    assert address_connections(RelaySettings(connections_per_address=0)) is None
    assert address_connections(RelaySettings(connections_per_address=7)) == 7
    assert address_connections(RelaySettings(connections_per_address=7, embedded=True)) is None


def test_an_accept_that_failed_for_want_of_descriptors_is_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio's loop reports it (``socket.accept() out of system resource``) each time it tries
    again, with a traceback; the relay says it once, then a count."""
    import errno

    caplog.set_level(logging.INFO)
    peer_errors = PeerErrorLog(logging.getLogger("devtunnel.relay"))
    watch = DescriptorWatch(peer_errors, 1024)
    loop = asyncio.new_event_loop()
    try:
        for _ in range(3):
            watch.loop_exception_handler(loop, {
                "message": "socket.accept() out of system resource",
                "exception": OSError(errno.EMFILE, "Too many open files"),
            })
        peer_errors.close()
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "the relay could not accept a connection: Too many open files (open-file limit 1024, ulimit -n); "
        "new connections wait until some close",
        "2 more connections the relay could not accept for want of file descriptors in the last 10 s",
    ]
    assert all(r.exc_info is None for r in caplog.records)
