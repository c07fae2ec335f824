"""Connections waiting to send a request, or an agent's HELLO (``relay.pending``), on a relay in
this process: what counts, when it stops counting, what a refused or dropped one is told, and
the relay's counts (``Relay.pending_connections``, ``Relay.turned_away``).

Real sockets: attackers connect from 127.0.0.3, legitimate clients and agents from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
import uvloop
import websockets

from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.pending import PendingConnections, default_limit
from devtunnel.relay.server import Relay
from devtunnel.relay.settings import RelaySettings, pending_limits
from devtunnel.values.relay_url import CONNECT_PATH
from tests.helpers import async_wait_for
from tests.net._relay_agent import connect_agent, running_relay
from tests.net.test_relay_limits import read_close_code

ATTACKER = "127.0.0.3"

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_from(relay: Relay, address: str = ATTACKER) -> Stream:
    return await asyncio.open_connection("127.0.0.1", relay.port, local_addr=(address, 0))


def upgrade(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {CONNECT_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


async def head_of(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(10):
        return await reader.readuntil(b"\r\n\r\n")


async def closed(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(10):
        try:
            return await reader.read(65536) == b"" or await reader.read(65536) == b""
        except ConnectionResetError:
            return True


async def hold(relay: Relay, count: int, address: str = ATTACKER) -> list[Stream]:
    """``count`` silent connections from ``address``, once the relay counts them all."""
    start = relay.pending_connections
    streams = [await open_from(relay, address) for _ in range(count)]
    await async_wait_for(lambda: relay.pending_connections >= start + count, what=f"{count} pending")
    return streams


def close_all(streams: list[Stream]) -> None:
    for _, writer in streams:
        writer.close()


async def test_a_connection_counts_until_its_request_head_and_again_while_kept_alive_when_crowded() -> None:
    # pending_per_address=5: idle kept-alive connections count once the address holds more than
    # 5 // 4 = 1 open HTTP connection (PendingConnections.quiet_per_address).
    async with running_relay(pending_per_address=5) as relay:
        reader, writer = await open_from(relay)
        await async_wait_for(lambda: relay.pending_connections == 1, what="one pending")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = await head_of(reader)
        assert head.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(3) == b"ok\n"
        # Kept alive, idle, alone from its address: not counted (no bookkeeping a request).
        await async_wait_for(lambda: relay.pending_connections == 0, what="none pending")
        other_reader, other_writer = await open_from(relay)
        await async_wait_for(lambda: relay.pending_connections == 1, what="the second one pending")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await head_of(reader)).startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(3) == b"ok\n"
        # Two open from the address: idle again, it counts (waiting for a request, as the second).
        await async_wait_for(lambda: relay.pending_connections == 2, what="both pending")
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert await closed(reader)
        other_writer.close()
        assert await closed(other_reader)
        await async_wait_for(lambda: relay.pending_connections == 0, what="none pending")
        assert relay.turned_away == {"refused": 0, "dropped": 0}


async def test_an_agent_counts_until_its_hello_is_accepted_and_serves_while_its_address_is_full() -> None:
    async with running_relay(pending_per_address=3) as relay:
        flood = await hold(relay, 3)
        refused_reader, refused_writer = await open_from(relay)
        refused_writer.write(upgrade(relay.port))  # answered once it speaks, not upgraded
        assert (await head_of(refused_reader)).startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
        assert relay.turned_away == {"refused": 1, "dropped": 0}
        refused_writer.close()
        agent = await connect_agent(relay)  # from 127.0.0.1: its own share
        assert relay.pending_connections == 3  # the agent's WebSocket counts no more once welcomed
        reader, writer = await open_from(relay, "127.0.0.1")
        writer.write(b"GET /x HTTP/1.1\r\nHost: demo.localhost\r\nConnection: close\r\n\r\n")
        assert (await head_of(reader)).startswith(b"HTTP/1.1 200")
        writer.close()
        await agent.close()
        close_all(flood)


async def test_an_upgrade_to_the_agents_door_on_a_kept_alive_connection_still_counts() -> None:
    """A request first, then an upgrade on the same connection: pending until HELLO all along,
    so a client cannot shed the count by asking for a page first."""
    async with running_relay(pending_per_address=2) as relay:
        flood = await hold(relay, 1)
        reader, writer = await open_from(relay)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await head_of(reader)).startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(3) == b"ok\n"
        writer.write(upgrade(relay.port))
        assert (await head_of(reader)).startswith(b"HTTP/1.1 101")
        assert relay.pending_connections == 2
        third_reader, third_writer = await open_from(relay)
        third_writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await head_of(third_reader)).startswith(b"HTTP/1.1 429")
        third_writer.close()
        writer.close()
        close_all(flood)


async def test_the_oldest_pending_connection_is_dropped_to_make_room_503_or_close_1013() -> None:
    async with running_relay(pending_connections=2, pending_per_address=0) as relay:
        silent_reader, silent_writer = await open_from(relay)
        silent_writer.write(b"GET / HTTP/1.1\r\nHost: loc")  # a head begun: it gets an answer
        await async_wait_for(lambda: relay.pending_connections == 1, what="one pending")
        ws_reader, ws_writer = await open_from(relay)
        ws_writer.write(upgrade(relay.port))
        assert (await head_of(ws_reader)).startswith(b"HTTP/1.1 101")
        newest = [await open_from(relay)]
        head = await head_of(silent_reader)
        assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"retry-after: 5" in head
        assert relay.turned_away == {"refused": 0, "dropped": 1}
        more = [await open_from(relay)]
        assert await read_close_code(ws_reader) == 1013  # an agent's WebSocket without HELLO
        assert relay.turned_away == {"refused": 0, "dropped": 2}
        agent = await connect_agent(relay)  # makes room too, and is welcomed
        assert relay.pending_connections == 1  # of the two held, the older went for the agent
        await agent.close()
        for writer in (silent_writer, ws_writer):
            writer.close()
        close_all(newest + more)


async def test_an_agent_refused_for_its_address_reads_the_429_as_the_answer_to_its_handshake() -> None:
    """Answered once it spoke: a 429 written before its handshake made the WebSocket client fail
    with an AssertionError of its own (the agent then stopped) instead of reading the answer."""
    async with running_relay(pending_per_address=1) as relay:
        flood = await hold(relay, 1, "127.0.0.1")
        for _ in range(3):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(f"ws://127.0.0.1:{relay.port}{CONNECT_PATH}", open_timeout=10)
            assert refused.value.response.status_code == 429
            assert refused.value.response.headers["retry-after"] == "5"
        close_all(flood)


async def test_a_refused_connection_that_sends_nothing_is_cut_after_a_grace_and_told_nothing() -> None:
    async with running_relay(pending_per_address=1) as relay:
        flood = await hold(relay, 1)
        reader, writer = await open_from(relay)
        assert await reader.read() == b""  # (the grace: REFUSAL_GRACE)
        writer.close()
        assert relay.turned_away == {"refused": 1, "dropped": 0}
        close_all(flood)


async def test_a_trusted_proxy_address_is_held_to_the_total_only() -> None:
    async with running_relay(pending_per_address=2, trusted_proxies=["127.0.0.3"]) as relay:
        flood = await hold(relay, 5)
        assert relay.turned_away == {"refused": 0, "dropped": 0}
        close_all(flood)


async def test_the_embedded_relay_limits_no_address() -> None:
    async with running_relay(embedded=True, pending_per_address=2) as relay:
        flood = await hold(relay, 5, "127.0.0.1")
        assert relay.turned_away == {"refused": 0, "dropped": 0}
        close_all(flood)


async def test_refusals_are_logged_once_per_interval_with_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "devtunnel.relay")
    async with running_relay(pending_per_address=1, log_interval=0.2) as relay:
        flood = await hold(relay, 1)
        for _ in range(5):
            reader, writer = await open_from(relay)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert (await head_of(reader)).startswith(b"HTTP/1.1 429")
            writer.close()
        await async_wait_for(lambda: any("4 more connections refused" in r.message for r in caplog.records),
                             what="the summary line")
        lines = [r.message for r in caplog.records if "the most one address may" in r.message]
        assert lines == ["client 127.0.0.3 holds 1 connections waiting to send a request, the most one address may: "
                         "a new one refused (429)"]
        close_all(flood)


async def test_a_head_trickled_a_byte_at_a_time_is_cut_at_the_head_timeout_counted_from_its_start() -> None:
    """Each byte is progress the parser sees, but the head timer is not armed again by it: a
    slowloris client holds its connection for ``head_timeout`` at most, however it trickles."""
    async with running_relay(head_timeout=0.5) as relay:
        loop = asyncio.get_running_loop()
        reader, writer = await open_from(relay)
        started = loop.time()

        async def trickle() -> None:
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            while not writer.is_closing():
                writer.write(b"a")
                await asyncio.sleep(0.02)

        task = asyncio.create_task(trickle())
        try:
            async with asyncio.timeout(10):
                answer = await reader.read(-1)
        finally:
            task.cancel()
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
        assert loop.time() - started < 2.5


async def test_after_a_408_the_client_still_sending_its_head_reads_it_and_the_relay_reads_briefly_then_closes() -> None:
    """Closed at once after the 408, a connection whose client was still sending was reset by
    those bytes, and the reset could drop the 408 unread (seen under load). The relay ends its
    side after the 408 and reads what still comes for a moment, bounded in time and bytes."""
    async with running_relay(head_timeout=0.3) as relay:
        loop = asyncio.get_running_loop()
        reader, writer = await open_from(relay)
        writer.write(b"POST / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        async with asyncio.timeout(10):
            answer = await reader.read(-1)  # the 408, then the end of the relay's side
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
        assert relay.open_connections == 1  # still reading (closed, it was 0 by the end seen)
        # The client goes on sending: read and dropped, no reset while within the bounds.
        writer.write(b"a" * 1000)
        await writer.drain()
        ended = loop.time()
        # Past the byte bound the relay closes; the next writes meet the closed connection.
        with pytest.raises(ConnectionError):
            async with asyncio.timeout(10):
                while True:
                    writer.write(b"b" * 16384)
                    await writer.drain()
                    await asyncio.sleep(0.01)
        assert loop.time() - ended < 3.0
        writer.close()

        # A client that goes quiet instead is closed once the time bound passes.
        reader, writer = await open_from(relay)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        async with asyncio.timeout(10):
            assert (await reader.read(-1)).startswith(b"HTTP/1.1 408 Request Timeout")
        await async_wait_for(lambda: relay.open_connections == 0, timeout=5,
                             what="the connection closed after the bound")
        writer.close()


@pytest.mark.parametrize("kind", ["too large", "malformed"])
async def test_the_relays_own_refusal_of_a_head_reaches_a_client_still_sending(kind: str) -> None:
    """A 431 for a head past the bound, or a 400 for a malformed one, written while the client
    still sends: the relay's side ends after it and the rest is read and dropped, so the client
    reads the answer (closed at once with bytes unread, the connection was reset and the answer
    could be lost)."""
    async with running_relay() as relay:
        reader, writer = await open_from(relay)
        if kind == "too large":
            head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * (300 << 10)
            expected = b"HTTP/1.1 431 "
        else:
            head = b"GET /\x01 HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * (300 << 10)
            expected = b"HTTP/1.1 400 "
        writer.write(head)  # more than the socket buffers hold: still being sent when refused
        async with asyncio.timeout(10):
            answer = await reader.read(-1)
        assert answer.startswith(expected), answer[:80]
        writer.close()


# -- the counts themselves -----------------------------------------------------------------------
class Conn:
    def __init__(self) -> None:
        self.dropped = False

    def drop_pending(self) -> None:
        self.dropped = True


def test_an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_one_as_itself() -> None:
    pending = PendingConnections(100, 2, PeerErrorLog(logging.getLogger("test")))
    assert pending.admit(Conn(), ("2001:db8::1", 1)) and pending.admit(Conn(), ("2001:db8::2", 1))
    assert not pending.admit(Conn(), ("2001:db8::ffff", 1))
    assert pending.admit(Conn(), ("2001:db8:0:1::1", 1))
    assert pending.admit(Conn(), ("::ffff:10.0.0.1", 1)) and pending.admit(Conn(), ("10.0.0.1", 1))
    assert pending.held_by("10.0.0.1") == 2 and not pending.admit(Conn(), ("10.0.0.1", 1))


def test_a_connection_kept_alive_counts_but_is_never_refused() -> None:
    pending = PendingConnections(100, 1, PeerErrorLog(logging.getLogger("test")))
    first, idle = Conn(), Conn()
    assert pending.admit(first, ("10.0.0.1", 1))
    pending.idle(idle, "10.0.0.1")
    assert pending.held_by("10.0.0.1") == 2 and pending.refused == 0
    pending.release(idle)
    pending.release(idle)  # harmless twice
    assert pending.held_by("10.0.0.1") == 1


def test_the_total_drops_the_oldest_and_a_mapped_trusted_proxy_is_exempt() -> None:
    import ipaddress

    pending = PendingConnections(2, 1, PeerErrorLog(logging.getLogger("test")),
                                 exempt=[ipaddress.ip_network("10.0.0.0/8")])
    a, b, c = Conn(), Conn(), Conn()
    assert pending.admit(a, ("::ffff:10.0.0.1", 1)) and pending.admit(b, ("10.0.0.1", 2))
    assert pending.admit(c, ("10.0.0.1", 3))
    assert a.dropped and not b.dropped and len(pending) == 2 and pending.dropped == 1


def test_the_automatic_total_is_half_the_open_file_limit_within_bounds() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_limit() == max(64, min(4096, soft // 2))
    assert pending_limits(RelaySettings(pending_connections=10, pending_per_address=0)) == (10, None)
    assert pending_limits(RelaySettings(pending_connections=10, embedded=True)) == (10, None)
    assert pending_limits(RelaySettings(pending_connections=10)) == (10, 256)


# -- a relay serving TLS itself ------------------------------------------------------------------
async def test_tls_connections_count_from_their_accept_and_a_handshake_is_held_to_the_head_timeout(
    tmp_path: Path,
) -> None:
    """asyncio's TLS listener told the relay nothing of a connection until its handshake was
    done, and waited 60 s for it: silent connections to a TLS relay were counted nowhere."""
    ca = trustme.CA()
    pem = tmp_path / "relay.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    async with running_relay(tls_cert=str(pem), tls_key=str(pem), pending_per_address=5, head_timeout=1.0) as relay:
        flood = [await open_from(relay) for _ in range(20)]
        await async_wait_for(lambda: relay.turned_away["refused"] == 15, what="15 refused")
        assert relay.pending_connections == 5
        for reader, _ in flood[5:]:
            assert await closed(reader)  # cut: no answer a TLS client could read before its handshake
        agent = await connect_agent(relay, scheme="wss", ssl=client_tls)  # served while the flood is held
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port, ssl=client_tls,
                                                       server_hostname="localhost")
        writer.write(b"GET /x HTTP/1.1\r\nHost: demo.localhost\r\nConnection: close\r\n\r\n")
        assert (await head_of(reader)).startswith(b"HTTP/1.1 200")
        writer.close()
        await agent.close()
        started = asyncio.get_running_loop().time()
        for reader, _ in flood[:5]:  # never sent a ClientHello: cut at the head timeout, not after 60 s
            assert await closed(reader)
        assert asyncio.get_running_loop().time() - started < 5
        await async_wait_for(lambda: relay.pending_connections == 0, what="none pending")
        close_all(flood)


def _hello_sent(port: int, client_tls: ssl.SSLContext) -> ssl.SSLSocket:
    """A TLS connection to ``port`` that has sent its ClientHello (before the relay's loop runs
    again: the kernel completes the connection) and waits for the answer."""
    tls = client_tls.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost",
                                 do_handshake_on_connect=False)
    tls.setblocking(False)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return tls


def _answer(tls: ssl.SSLSocket) -> bytes:
    """The end of the handshake, then the relay's answer to a request (5 s for each)."""
    tls.settimeout(5)
    with tls:
        tls.do_handshake()
        tls.sendall(b"GET /x HTTP/1.1\r\nHost: nobody.localhost\r\nConnection: close\r\n\r\n")
        return tls.recv(65536)


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_client_hello_already_in_when_the_relay_accepts_is_answered(
    new_loop: Callable[[], asyncio.AbstractEventLoop], tmp_path: Path
) -> None:
    """Under uvloop (``devtunnel relay``'s loop) a connection reads from its accept on, whatever
    its protocol asked: a ClientHello already in (a busy relay, a quick client) went to the
    connection before its handshake started and was lost, and client and relay each waited for
    the other until the head timeout (an agent then retried: 10 s and more to come online)."""
    ca = trustme.CA()
    pem = tmp_path / "relay.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    async def main() -> bytes:
        async with running_relay(tls_cert=str(pem), tls_key=str(pem), head_timeout=30.0) as relay:
            tls = _hello_sent(relay.port, client_tls)  # no await since: the relay has not accepted it yet
            return await asyncio.to_thread(_answer, tls)

    with asyncio.Runner(loop_factory=new_loop) as runner:
        assert runner.run(main()).startswith(b"HTTP/1.1 404 ")
