"""The relay drains before it stops (``Relay.drain``): it takes no new connections, closes each
public HTTP connection after its response, and lets the HTTP requests in flight through tunnels
finish, agents and public WebSockets staying connected meanwhile.

``devtunnel relay`` drains on its first SIGTERM or SIGINT: tests/net/test_relay_drain_cli.py.
"""

from __future__ import annotations

import asyncio

import pytest
import websockets

from devtunnel.relay.server import Relay
from tests.helpers import async_wait_for
from tests.net._relay_agent import AgentRequest, Handler, ScriptedAgent, connect_agent, running_relay
from tests.net.test_relay_websocket import ws_echo

HOST = b"Host: demo.localhost\r\n"


def held_answers(release: asyncio.Event) -> Handler:
    """A handler answering ``/quick`` at once, a WebSocket as ``ws_echo`` does, ``/started``
    with its head and first bytes at once and the rest once ``release`` is set, and anything
    else whole once ``release`` is set."""

    async def handler(request: AgentRequest) -> None:
        if request.event.websocket:
            await ws_echo(request)
            return
        body = await request.body()
        target = request.event.target
        payload = b"answer to " + target + b" " + body
        if target == b"/quick":
            request.respond(200, [(b"Content-Length", str(len(payload)).encode())])
            await request.send(payload, end=True)
            return
        if target == b"/started":
            request.respond(200, [(b"Content-Length", str(len(payload)).encode())])
            await request.send(payload[:6])
            await release.wait()
            await request.send(payload[6:], end=True)
            return
        await release.wait()
        request.respond(200, [(b"Content-Length", str(len(payload)).encode())])
        await request.send(payload, end=True)

    return handler


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status, *lines = head[:-4].split(b"\r\n")
    fields = {}
    for line in lines:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    return status, fields


async def read_rest(reader: asyncio.StreamReader, fields: dict[bytes, bytes]) -> tuple[bytes, bytes]:
    """The body (``Content-Length``) and what follows it until the connection closes."""
    body = await asyncio.wait_for(reader.readexactly(int(fields[b"content-length"])), 10)
    after = await asyncio.wait_for(reader.read(), 10)
    return body, after


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_drain_lets_http_requests_in_flight_finish_then_each_connection_closes() -> None:
    """Every listener closes at once, the pinned port's too; an idle kept-alive connection is
    closed at once; the requests in flight, on the direct path (a GET, on the pinned port), on
    the ASGI path (a body sent after ``100 Continue``) and one whose response had started, get
    their whole response, the first two saying ``Connection: close``, and then their
    connection closes. The agent and a public WebSocket stay connected, and the WebSocket is
    not counted as in flight."""
    release = asyncio.Event()
    handler = held_answers(release)
    async with running_relay() as relay:
        agent = await connect_agent(relay, handler=handler)
        pinned = await relay.pin("demo")
        try:
            socket = await websockets.connect(f"ws://demo.localhost:{relay.port}/live", host="127.0.0.1")
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", relay.port)
            idle_writer.write(b"GET /quick HTTP/1.1\r\n" + HOST + b"\r\n")
            status, fields = await read_head(idle_reader)
            assert await idle_reader.readexactly(int(fields[b"content-length"])) == b"answer to /quick "
            direct_reader, direct_writer = await asyncio.open_connection("127.0.0.1", pinned)
            direct_writer.write(b"GET /direct HTTP/1.1\r\nHost: anything\r\n\r\n")
            task_reader, task_writer = await asyncio.open_connection("127.0.0.1", relay.port)
            task_writer.write(b"POST /task HTTP/1.1\r\n" + HOST + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            assert await asyncio.wait_for(task_reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
            task_writer.write(b"hello")
            started_reader, started_writer = await asyncio.open_connection("127.0.0.1", relay.port)
            started_writer.write(b"GET /started HTTP/1.1\r\n" + HOST + b"\r\n")
            started_status, started_fields = await read_head(started_reader)
            assert b"connection" not in started_fields  # (its head went before the drain)
            await async_wait_for(lambda: relay.requests_in_flight == 3, what="three requests in flight, the WebSocket not counted")

            relay.stop_accepting()  # (drain does it first, once its task runs: as devtunnel relay does)
            draining = asyncio.ensure_future(relay.drain(60))
            assert await refused(relay.port) and await refused(pinned)
            assert await asyncio.wait_for(idle_reader.read(), 10) == b""  # closed at once
            assert not draining.done() and relay.tunnels == ["demo"]
            await socket.send("still here")
            assert await asyncio.wait_for(socket.recv(), 10) == "STILL HERE"

            release.set()
            for reader, target, body in ((direct_reader, b"/direct", b""), (task_reader, b"/task", b"hello")):
                status, fields = await read_head(reader)
                assert (status, fields.get(b"connection")) == (b"HTTP/1.1 200 OK", b"close"), target
                assert await read_rest(reader, fields) == (b"answer to " + target + b" " + body, b"")
            assert started_status == b"HTTP/1.1 200 OK"
            assert await read_rest(started_reader, started_fields) == (b"answer to /started ", b"")
            assert await asyncio.wait_for(draining, 10) == 0
            assert relay.tunnels == ["demo"]  # stop() disconnects the agents, drain() does not
            await socket.send("and after")
            assert await asyncio.wait_for(socket.recv(), 10) == "AND AFTER"
            await socket.close()
            for writer in (idle_writer, direct_writer, task_writer, started_writer):
                writer.close()
        finally:
            await agent.close()


async def test_requests_pipelined_behind_one_in_flight_are_answered_and_the_last_says_close() -> None:
    release = asyncio.Event()
    async with running_relay() as relay:
        agent = await connect_agent(relay, handler=held_answers(release))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"GET /one HTTP/1.1\r\n" + HOST + b"\r\nGET /two HTTP/1.1\r\n" + HOST + b"\r\n")
            await async_wait_for(lambda: relay.requests_in_flight == 1, what="the first request in flight")
            relay.stop_accepting()
            draining = asyncio.ensure_future(relay.drain(60))
            release.set()
            status, fields = await read_head(reader)
            assert (status, fields.get(b"connection")) == (b"HTTP/1.1 200 OK", None)
            assert await reader.readexactly(int(fields[b"content-length"])) == b"answer to /one "
            status, fields = await read_head(reader)
            assert (status, fields.get(b"connection")) == (b"HTTP/1.1 200 OK", b"close")
            assert await read_rest(reader, fields) == (b"answer to /two ", b"")
            assert await asyncio.wait_for(draining, 10) == 0
            writer.close()
        finally:
            await agent.close()


@pytest.mark.parametrize("how", ["timeout", "interrupted"])
async def test_drain_returns_how_many_requests_are_still_in_flight_at_its_timeout_or_when_interrupted(how: str) -> None:
    release = asyncio.Event()
    handler = held_answers(release)
    async with running_relay() as relay:
        agent = await connect_agent(relay, handler=handler)
        try:
            writers = []
            for _ in range(2):
                _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
                writer.write(b"GET /held HTTP/1.1\r\n" + HOST + b"\r\n")
                writers.append(writer)
            await async_wait_for(lambda: relay.requests_in_flight == 2, what="two requests in flight")
            interrupted = asyncio.Event()
            if how == "timeout":
                assert await asyncio.wait_for(relay.drain(0.2, interrupted), 10) == 2
            else:
                draining = asyncio.ensure_future(relay.drain(60, interrupted))
                interrupted.set()
                assert await asyncio.wait_for(draining, 10) == 2
            assert relay.tunnels == ["demo"]
            for writer in writers:
                writer.close()
        finally:
            release.set()
            await agent.close()


async def test_a_relay_never_started_or_already_stopped_has_nothing_to_drain() -> None:
    async with running_relay() as relay:
        pass
    assert await relay.drain(60) == 0
    assert await Relay(relay.settings).drain(60) == 0


async def test_requests_in_flight_counts_each_agents_http_streams(relay: Relay) -> None:
    release = asyncio.Event()
    handler = held_answers(release)
    agents: list[ScriptedAgent] = [
        await connect_agent(relay, name=name, handler=handler)
        for name in ("alpha", "beta")
    ]
    try:
        assert relay.requests_in_flight == 0
        writers = []
        for name in (b"alpha", b"beta", b"beta"):
            _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"GET /held HTTP/1.1\r\nHost: " + name + b".localhost\r\n\r\n")
            writers.append(writer)
        await async_wait_for(lambda: relay.requests_in_flight == 3, what="three requests in flight on two agents")
        release.set()
        await async_wait_for(lambda: relay.requests_in_flight == 0, what="every request answered")
        for writer in writers:
            writer.close()
    finally:
        for agent in agents:
            await agent.close()
