"""No client holds a tunnel's streams for free: a request body that stops arriving is dropped
(408), and one client address holds at most its share of a tunnel's streams (429 beyond).

Real sockets: attackers connect from 127.0.0.1, legitimate clients from 127.0.0.2 (every
127.0.0.0/8 address is loopback, and the relay tells clients apart by address).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from devtunnel.relay.server import Relay
from devtunnel.relay.settings import RelaySettings, client_limit
from devtunnel.relay.slots import client_key
from devtunnel.protocol.events import StreamReset
from tests.helpers import async_wait_for
from tests.net._relay_agent import AgentRequest, ScriptedAgent, connect_agent, echo, running_relay
from tests.net.tunnel_fixtures import parse_response, raw_server, read_request_head, relay_and_agent

HOST = b"Host: demo.localhost\r\n"
ATTACKER = "127.0.0.1"
LEGIT = "127.0.0.2"


async def open_from(relay: Relay, address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", relay.port, local_addr=(address, 0))


async def start_slow_upload(relay: Relay, address: str = ATTACKER) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client announcing a 1 GB body and sending one byte of it (then nothing)."""
    reader, writer = await open_from(relay, address)
    writer.write(b"POST /upload HTTP/1.1\r\n" + HOST + b"Content-Length: 1000000000\r\n\r\nx")
    await writer.drain()
    return reader, writer


async def read_to_close(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(10):
        return await reader.read(-1)


async def request_from(relay: Relay, address: str, data: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Send one raw request (which should say Connection: close) from ``address``; the parsed response."""
    reader, writer = await open_from(relay, address)
    try:
        writer.write(data)
        return parse_response(await read_to_close(reader))
    finally:
        writer.close()


async def holding_agent(relay: Relay) -> tuple[ScriptedAgent, list[AgentRequest]]:
    """An agent that reads each request's body to its end (or reset) and answers only after that."""
    resets: list[AgentRequest] = []

    async def handler(request: AgentRequest) -> None:
        try:
            await request.body()
        except ConnectionResetError:
            resets.append(request)
            return
        request.respond(200, [(b"Content-Length", b"2")])
        await request.send(b"ok", end=True)

    return await connect_agent(relay, handler=handler), resets


# -- the stalled body ---------------------------------------------------------------------------------
async def test_a_body_that_stops_arriving_gets_408_and_the_agent_sees_the_stream_reset() -> None:
    async with running_relay(body_timeout=0.3) as relay:
        agent, resets = await holding_agent(relay)
        try:
            reader, writer = await start_slow_upload(relay)
            raw = await read_to_close(reader)  # the relay answers, then closes
            writer.close()
            status, headers, body = parse_response(raw)
            assert status == 408
            assert (b"connection", b"close") in headers
            assert b"no request body for 0.3 s (after 1 bytes)" in body
            await async_wait_for(lambda: len(resets) == 1, what="the agent to see the reset")
            await async_wait_for(
                lambda: relay._slots.held(relay._tunnels["demo"].members[0], ATTACKER) == 0,  # type: ignore[attr-defined]
                what="the stream to be given back",
            )
        finally:
            await agent.close()


async def test_a_fault_while_forwarding_a_body_fails_the_request_instead_of_holding_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The uploading task's own exception is not left unread while the client waits: compiled
    with mypyc, making ``BodyStalled`` once raised TypeError there and the client got nothing.
    The fault is raised where ``HttpForwarder._stalled`` logs the stall, through the relay's
    (interpreted) error log, which the forwarder still calls where it runs compiled."""
    async with running_relay(body_timeout=0.3) as relay:
        log = relay._peer_errors.log

        def broken(key: str, *args: Any) -> None:
            if key == "body-stalled":
                raise RuntimeError("a fault in _stalled")
            log(key, *args)

        monkeypatch.setattr(relay._peer_errors, "log", broken)
        agent, resets = await holding_agent(relay)
        try:
            reader, writer = await start_slow_upload(relay)
            status, _, body = parse_response(await read_to_close(reader))
            writer.close()
            assert status == 502
            assert b"the relay failed to forward the request body" in body
            await async_wait_for(lambda: len(resets) == 1, what="the agent to see the reset")
            assert "a fault in _stalled" in caplog.text
        finally:
            await agent.close()


async def test_a_body_stalled_after_the_response_started_breaks_the_connection() -> None:
    started = asyncio.Event()

    async def answer_first(request: AgentRequest) -> None:
        request.respond(200, [(b"Content-Length", b"100")])
        await request.send(b"partial")
        started.set()

    async with running_relay(body_timeout=0.3) as relay:
        agent = await connect_agent(relay, handler=answer_first)
        try:
            reader, writer = await start_slow_upload(relay)
            raw = await read_to_close(reader)
            writer.close()
            assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
            assert raw.endswith(b"\r\n\r\npartial")  # cut short: 7 of the 100 bytes announced
            [request] = agent.requests.values()
            async with asyncio.timeout(10):
                event = await request.inbox.get()
                while not isinstance(event, StreamReset):
                    event = await request.inbox.get()
            assert "no request body for 0.3 s" in event.reason
        finally:
            await agent.close()


async def test_waiting_for_the_agent_window_does_not_count_as_a_stalled_body() -> None:
    """The relay stops reading while the agent's window is full: that is not the client's fault."""
    size = 32 << 20  # more than the kernel's socket buffers on both ends hold
    go = asyncio.Event()

    async def slow_reader(request: AgentRequest) -> None:
        await go.wait()
        answer = str(len(await request.body())).encode()
        request.respond(200, [(b"Content-Length", str(len(answer)).encode())])
        await request.send(answer, end=True)

    async with running_relay(body_timeout=0.3) as relay:
        agent = await connect_agent(relay, handler=slow_reader, initial_window=64 << 10)
        try:
            reader, writer = await open_from(relay, LEGIT)
            writer.write(b"POST /big HTTP/1.1\r\n" + HOST + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % size)
            writer.write(b"a" * size)
            sending = asyncio.ensure_future(writer.drain())
            # Stalled on the agent for well over the body timeout, with the client ready to send.
            await async_wait_for(lambda: writer.transport.get_write_buffer_size() > 0, what="the upload to back up")
            await asyncio.sleep(1.0)
            go.set()
            status, _, body = parse_response(await read_to_close(reader))
            await sending
            writer.close()
            assert (status, body) == (200, str(size).encode())
        finally:
            await agent.close()


async def test_a_stalled_body_is_dropped_at_the_local_service_and_recorded(tmp_path: Path) -> None:
    """The whole path: the local service sees its request aborted, the capture says the relay timed
    the body out (the 408 the client got), not that the client went."""
    aborted = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[bytes] = []

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await read_request_head(reader))
        try:
            received.append(await reader.read(-1))  # until the agent drops the connection
        except ConnectionResetError:
            received.append(b"(reset)")
        loop.call_soon_threadsafe(aborted.set)
        writer.close()

    with raw_server(service) as port:
        async with relay_and_agent(tmp_path, body_timeout=0.3) as harness:
            await harness.start(str(port), name="demo")
            reader, writer = await start_slow_upload(harness.relay)
            status, _, _ = parse_response(await read_to_close(reader))
            writer.close()
            assert status == 408
            async with asyncio.timeout(10):
                await aborted.wait()
            assert received[0].startswith(b"POST /upload HTTP/1.1\r\n")
            assert received[1] in (b"x", b"(reset)")
            [exchange] = await harness.exchanges(1)
            assert exchange.error == "client_timeout"
            assert exchange.error_message == (
                "the relay timed out the public client's request body before the response ended: "
                "the client sent no request body for 0.3 s (after 1 bytes)"
            )


# -- one address's share of a tunnel --------------------------------------------------------------------
async def test_slow_uploads_from_one_address_leave_the_tunnel_to_the_others() -> None:
    """The reported attack, scaled down: a tunnel of 8 streams, one address sending 1 GB bodies a
    byte at a time. It holds 2 streams (a quarter), is refused beyond, and the rest is served."""
    async with running_relay(max_streams=8) as relay:
        agent, _ = await holding_agent(relay)
        attackers = []
        try:
            for _ in range(2):
                attackers.append(await start_slow_upload(relay))
            await async_wait_for(lambda: len(agent.requests) == 2, what="the two slow uploads to reach the agent")
            for _ in range(6):
                status, headers, body = await request_from(
                    relay, ATTACKER, b"POST /more HTTP/1.1\r\n" + HOST + b"Content-Length: 1000000000\r\n\r\nx"
                )
                assert status == 429
                assert (b"retry-after", b"1") in headers
                assert b"too many requests from 127.0.0.1 in flight on tunnel demo (at most 2)" in body
            # Whole bodies (answered from callbacks) and a body that streams in (the ASGI path).
            get = await request_from(relay, ATTACKER, b"GET /direct HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
            assert get[0] == 429
            for address in (LEGIT, "127.0.0.3"):
                status, _, body = await request_from(
                    relay, address, b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
                )
                assert (status, body) == (200, b"ok")
                reader, writer = await open_from(relay, address)
                seen = len(agent.requests)
                writer.write(b"POST / HTTP/1.1\r\n" + HOST + b"Connection: close\r\nContent-Length: 6\r\n\r\nhel")
                await writer.drain()
                await async_wait_for(lambda seen=seen: len(agent.requests) > seen, what="the streamed upload to start")
                writer.write(b"lo!")
                status, _, body = parse_response(await read_to_close(reader))
                writer.close()
                assert (status, body) == (200, b"ok")
        finally:
            for _, writer in attackers:
                writer.close()
            await agent.close()


async def test_an_address_gets_its_streams_back_once_its_requests_end() -> None:
    release = asyncio.Event()

    async def hold(request: AgentRequest) -> None:
        await release.wait()
        await echo(request)

    async with running_relay(max_streams=8) as relay:
        agent = await connect_agent(relay, handler=hold)
        try:
            get = b"GET /held HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
            held = [asyncio.ensure_future(request_from(relay, ATTACKER, get)) for _ in range(2)]
            await async_wait_for(lambda: len(agent.requests) == 2, what="two requests held")
            assert (await request_from(relay, ATTACKER, get))[0] == 429
            release.set()
            assert [status for status, _, _ in await asyncio.gather(*held)] == [200, 200]
            await async_wait_for(
                lambda: relay._slots.held(relay._tunnels["demo"].members[0], ATTACKER) == 0,  # type: ignore[attr-defined]
                what="the streams to be given back",
            )
            assert (await request_from(relay, ATTACKER, get))[0] == 200
        finally:
            await agent.close()


async def test_websockets_count_towards_an_address_share() -> None:
    release = asyncio.Event()

    async def hold_websockets(request: AgentRequest) -> None:
        if request.event.target == b"/ws":
            await release.wait()
        else:
            await echo(request)

    async with running_relay(max_streams=4) as relay:
        agent = await connect_agent(relay, handler=hold_websockets)
        try:
            upgrade = (
                b"GET /ws HTTP/1.1\r\n" + HOST + b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            _, writer = await open_from(relay, ATTACKER)
            writer.write(upgrade)
            await async_wait_for(lambda: len(agent.requests) == 1, what="the WebSocket to reach the agent")
            status, headers, body = await request_from(relay, ATTACKER, upgrade)
            assert status == 429
            assert body.startswith(b"too many requests from 127.0.0.1")
            assert (b"retry-after", b"1") in [(n.lower(), v) for n, v in headers]
            status, _, _ = await request_from(relay, LEGIT, b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
            assert status == 200
        finally:
            release.set()
            writer.close()
            await agent.close()


@pytest.mark.parametrize(
    ("settings", "limit"),
    [
        (RelaySettings(), 256),
        (RelaySettings(max_streams=8), 2),
        (RelaySettings(max_streams=2), 1),
        (RelaySettings(max_streams=8, client_share=0.5), 4),
        (RelaySettings(client_share=1), None),
        (RelaySettings(embedded=True), None),
    ],
)
def test_an_address_share_is_a_fraction_of_the_tunnel_never_zero(settings: RelaySettings, limit: int | None) -> None:
    assert client_limit(settings) == limit


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),  # the same /64: the same client
        ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4 seen by a dual-stack listener
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("", ""),
    ],
)
def test_a_client_counts_by_its_ipv4_address_or_its_ipv6_64(ip: str, key: str) -> None:
    assert client_key(ip) == key


async def test_the_embedded_relay_drops_stalled_bodies_but_lets_its_one_address_use_every_stream() -> None:
    async with running_relay(embedded=True, tokens=(), max_streams=4, body_timeout=0.3) as relay:
        agent = await connect_agent(relay, token="", handler=lambda request: asyncio.sleep(0))
        try:
            writers = []
            for _ in range(4):  # a whole tunnel from 127.0.0.1, where a public relay would allow one
                reader, writer = await start_slow_upload(relay)
                writers.append(writer)
            await async_wait_for(lambda: len(agent.requests) == 4, what="four uploads to reach the agent")
            status, _, body = parse_response(await read_to_close(reader))
            assert status == 408
            assert b"no request body for 0.3 s" in body
        finally:
            for writer in writers:
                writer.close()
            await agent.close()
