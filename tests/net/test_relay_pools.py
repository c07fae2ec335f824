"""Pools: agents of one token sharing a tunnel name (``--pool``), on real sockets.

Each agent forwards to a local service of its own that answers with its label, so every
response says which agent carried it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets

from devtunnel.cli import EXIT_TUNNEL_REFUSED
from devtunnel.errors import ConfigError, NameInUseError, NameTakenError, TunnelError
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.info import TunnelState
from devtunnel.agent.service import AgentService
from devtunnel.agent.tunnel import Backoff
from devtunnel.api.app import serve_api
from devtunnel.relay.http_proxy import KEPT_BODY
from devtunnel.relay.server import Relay
from devtunnel.rules import parse_rules
from devtunnel.rules.model import Rule
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.relay_side import RelayConnection
from devtunnel.protocol.events import GoAway, Hello
from tests.helpers import async_wait_for
from tests.net._relay_agent import TOKEN, AgentRequest, ScriptedAgent, connect_agent, echo, running_relay, task_path_spied
from tests.net.test_agent_names import SilentDropProxy

FAST = Backoff(base=0.05, cap=0.2, rng=random.Random(5))


# -- local services that say who answered ------------------------------------------------------
def _labelled_app(label: str) -> Callable[..., Awaitable[None]]:
    body = label.encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": label})
            await send({"type": "websocket.close", "code": 1000})
            return
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


@asynccontextmanager
async def labelled_service(label: str) -> AsyncIterator[int]:
    """A local HTTP and WebSocket service on loopback answering ``label``; yields its port."""
    async with local_service(_labelled_app(label), label) as port:
        yield port


@asynccontextmanager
async def local_service(app: Callable[..., Awaitable[None]], label: str) -> AsyncIterator[int]:
    """The ASGI ``app`` served on loopback; yields its port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False,
                            http="httptools", proxy_headers=False)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await async_wait_for(lambda: server.started or task.done(), what=f"local service {label}")
        assert not task.done(), task
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@asynccontextmanager
async def pool_agent(relay_url: str, label: str, *, name: str = "api", pool: bool = True, token: str = TOKEN,
                     rules: tuple[Rule, ...] = ()) -> AsyncIterator[AgentService]:
    """An agent service in front of a local service answering ``label``, its tunnel started
    (``local_port`` is the local service's port)."""
    async with labelled_service(label) as port:
        service = AgentService(relay=relay_url, token=token, backoff=FAST)
        service.local_port = port  # type: ignore[attr-defined]
        try:
            await service.start_tunnel(TunnelConfig(target=str(port), name=name, pool=pool, rules=rules))
            yield service
        finally:
            await service.stop()


def relay_ws(relay: Relay) -> str:
    return f"ws://127.0.0.1:{relay.port}"


async def get(client: httpx.AsyncClient, relay: Relay, name: str = "api") -> httpx.Response:
    return await client.get(f"http://127.0.0.1:{relay.port}/who", headers={"Host": f"{name}.localhost"})


async def post_streamed(client: httpx.AsyncClient, relay: Relay) -> httpx.Response:
    """A chunked upload: the relay forwards it on its ASGI path, not the direct one."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"part one "
        yield b"part two"

    return await client.post(f"http://127.0.0.1:{relay.port}/who", headers={"Host": "api.localhost"}, content=chunks())


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=20)


async def load(relay: Relay, total: int, concurrency: int, on_response: Callable[[int], Awaitable[None]] | None = None
               ) -> tuple[list[str], list[int]]:
    """``total`` GETs with ``concurrency`` workers: (bodies of the 200s in order, other statuses)."""
    answered: list[str] = []
    failed: list[int] = []
    sent = 0

    async def worker(c: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < total:
            sent += 1
            response = await get(c, relay)
            if response.status_code == 200:
                answered.append(response.text)
            else:
                failed.append(response.status_code)
            if on_response is not None:
                await on_response(len(answered) + len(failed))

    async with client() as c:
        await asyncio.wait_for(asyncio.gather(*(worker(c) for _ in range(concurrency))), 120)
    return answered, failed


# -- sharing a name ----------------------------------------------------------------------------
async def test_requests_alternate_over_the_agents_of_a_pool_on_both_forwarding_paths() -> None:
    async with running_relay() as relay:
        async with pool_agent(relay_ws(relay), "a") as a, pool_agent(relay_ws(relay), "b") as b:
            assert relay.agents == {"api": 2}
            async with client() as c:
                direct = [(await get(c, relay)).text for _ in range(6)]
                streamed = [(await post_streamed(c, relay)).text for _ in range(4)]
            assert direct in (["a", "b"] * 3, ["b", "a"] * 3)
            assert streamed in (["a", "b"] * 2, ["b", "a"] * 2)
            # Each agent learns how many share the name, the first one from the relay's update.
            await async_wait_for(lambda: a.tunnels()[0].pool_members == 2, what="the first agent to hear of the second")
            assert b.tunnels()[0].pool_members == 2
            assert a.tunnels()[0].public_url == b.tunnels()[0].public_url


async def test_websockets_alternate_over_the_agents_of_a_pool() -> None:
    async with running_relay() as relay:
        async with pool_agent(relay_ws(relay), "a"), pool_agent(relay_ws(relay), "b"):
            labels = []
            for _ in range(4):
                async with websockets.connect(f"ws://api.localhost:{relay.port}/live", host="127.0.0.1",
                                              port=relay.port, proxy=None) as ws:
                    labels.append(await asyncio.wait_for(ws.recv(), 10))
            assert labels in (["a", "b"] * 2, ["b", "a"] * 2)


async def test_the_pool_shows_in_the_agent_api_and_on_the_relay_status_page() -> None:
    async with running_relay() as relay:
        async with pool_agent(relay_ws(relay), "a") as a:
            server, port = await serve_api(a, 0)
            try:
                async with client() as c:
                    tunnel = (await c.get(f"http://127.0.0.1:{port}/api/tunnels")).json()["tunnels"][0]
                    assert tunnel["pool"] == {"members": 1}
                    async with pool_agent(relay_ws(relay), "b"):

                        async def two() -> bool:
                            listed = (await c.get(f"http://127.0.0.1:{port}/api/tunnels")).json()["tunnels"]
                            return listed[0]["pool"] == {"members": 2}

                        await async_wait_for(two, what="the API to show two members")
                        page = await c.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "localhost"})
                        assert "tunnels online: 1\nagents online: 2\npool api: 2 agents\n" in page.text
                    await async_wait_for(two_becomes_one(c, port), what="the API to show one member again")
                    page = await c.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "localhost"})
                    assert "pool api: 1 agent\n" in page.text
            finally:
                await server.stop()


def two_becomes_one(c: httpx.AsyncClient, port: int) -> Callable[[], Awaitable[bool]]:
    async def one() -> bool:
        listed = (await c.get(f"http://127.0.0.1:{port}/api/tunnels")).json()["tunnels"]
        return listed[0]["pool"] == {"members": 1}

    return one


async def test_a_tunnel_without_pool_shows_no_pool_in_the_api_or_on_the_status_page() -> None:
    async with running_relay() as relay:
        async with pool_agent(relay_ws(relay), "a", pool=False) as a:
            assert a.tunnels()[0].pool_members is None
            server, port = await serve_api(a, 0)
            try:
                async with client() as c:
                    tunnel = (await c.get(f"http://127.0.0.1:{port}/api/tunnels")).json()["tunnels"][0]
                    page = await c.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "localhost"})
            finally:
                await server.stop()
            assert tunnel["pool"] is None
            assert "agents online: 1\n" in page.text and "pool" not in page.text


# -- members leaving -----------------------------------------------------------------------------
async def test_an_agent_stopped_mid_traffic_costs_only_the_requests_in_flight_on_it() -> None:
    concurrency, total = 4, 300
    async with running_relay() as relay:
        async with pool_agent(relay_ws(relay), "a") as a, pool_agent(relay_ws(relay), "b"):
            stopping: asyncio.Task[None] | None = None

            async def stop_a_after_50(done: int) -> None:
                nonlocal stopping
                if done == 50 and stopping is None:
                    stopping = asyncio.ensure_future(a.stop_tunnel("api"))

            answered, failed = await load(relay, total, concurrency, stop_a_after_50)
            assert stopping is not None
            await stopping
            # Only requests already sent to the stopped agent may fail; every other one went elsewhere.
            assert len(failed) <= concurrency, failed
            assert set(failed) <= {502}, failed
            assert len(answered) + len(failed) == total
            assert answered.count("a") >= 20 and answered.count("b") >= total - 50 - concurrency
            assert answered[-100:] == ["b"] * 100
            assert relay.agents == {"api": 1}
        await async_wait_for(lambda: relay.agents == {}, what="the name to be free after the last agent left")
        async with client() as c:
            assert (await get(c, relay)).status_code == 404


def _head_then_body(release: asyncio.Event) -> Callable[..., Awaitable[None]]:
    """An app that sends its response head at once and its body (``slow``) once ``release`` is set."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await release.wait()
        await send({"type": "http.response.body", "body": b"slow"})

    return app


@asynccontextmanager
async def _response_on_its_way(release: asyncio.Event) -> AsyncIterator[tuple[Relay, AgentService, httpx.Response]]:
    """A pool agent serving tunnel "api", and a public client's GET whose head arrived and whose
    body the local service holds until ``release`` is set."""
    async with running_relay() as relay, local_service(_head_then_body(release), "slow") as port:
        service = AgentService(relay=relay_ws(relay), token=TOKEN, backoff=FAST)
        try:
            await service.start_tunnel(TunnelConfig(target=str(port), name="api", pool=True))
            async with client() as c:
                url = f"http://127.0.0.1:{relay.port}/who"
                async with c.stream("GET", url, headers={"Host": "api.localhost"}) as response:
                    yield relay, service, response
        finally:
            release.set()
            await service.stop()


async def test_an_agent_stopped_while_a_response_is_on_its_way_finishes_it_before_it_leaves() -> None:
    # The head reached the public client: the stop must not cut the body (GOAWAY lets open streams finish).
    release = asyncio.Event()
    async with _response_on_its_way(release) as (relay, service, response):
        assert response.status_code == 200
        stopping = asyncio.ensure_future(service.stop_tunnel("api"))
        link = relay._tunnels["api"].members[0]
        await async_wait_for(lambda: link.draining, what="the relay to hear the agent's GOAWAY")
        assert not stopping.done() and not link.closed
        release.set()
        assert await response.aread() == b"slow"
        await asyncio.wait_for(stopping, 10)
        await async_wait_for(lambda: relay.agents == {}, what="the agent to leave")


async def test_a_stopping_agent_cuts_what_still_runs_after_its_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("devtunnel.agent.tunnel.LEAVE_GRACE", 0.3)
    release = asyncio.Event()
    async with _response_on_its_way(release) as (_, service, response):
        await asyncio.wait_for(service.stop_tunnel("api"), 10)  # never released
        with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
            await response.aread()


async def test_an_agent_stopping_lets_all_its_tunnels_finish_their_responses_at_once() -> None:
    # One tunnel after the other, each tunnel's grace would add up: an agent with a slow response
    # on each of N tunnels would take N grace periods to exit.
    release = asyncio.Event()
    names = ("api", "web")
    async with running_relay() as relay, local_service(_head_then_body(release), "slow") as port:
        service = AgentService(relay=relay_ws(relay), token=TOKEN, backoff=FAST)
        try:
            for name in names:
                await service.start_tunnel(TunnelConfig(target=str(port), name=name, pool=True))
            async with client() as c, AsyncExitStack() as streams:
                url = f"http://127.0.0.1:{relay.port}/who"
                responses = [await streams.enter_async_context(c.stream("GET", url, headers={"Host": f"{name}.localhost"}))
                             for name in names]
                assert [r.status_code for r in responses] == [200, 200]
                stopping = asyncio.ensure_future(service.stop())
                links = [relay._tunnels[name].members[0] for name in names]
                await async_wait_for(lambda: all(link.draining for link in links),
                                     what="every tunnel to say GOAWAY while its response still runs")
                assert not stopping.done()
                release.set()
                assert [await r.aread() for r in responses] == [b"slow", b"slow"]
                await asyncio.wait_for(stopping, 10)
        finally:
            release.set()
            await service.stop()


async def _open_websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app whose WebSockets stay open until the client closes them."""
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def test_a_stopping_agent_does_not_wait_for_its_websockets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("devtunnel.agent.tunnel.LEAVE_GRACE", 60)
    async with running_relay() as relay, local_service(_open_websocket, "ws") as port:
        service = AgentService(relay=relay_ws(relay), token=TOKEN, backoff=FAST)
        try:
            await service.start_tunnel(TunnelConfig(target=str(port), name="api", pool=True))
            async with websockets.connect(f"ws://api.localhost:{relay.port}/live", host="127.0.0.1", port=relay.port,
                                          proxy=None) as ws:
                await asyncio.wait_for(service.stop_tunnel("api"), 10)  # not the 60 s of grace
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
        finally:
            await service.stop()


def answering(label: str) -> Callable[[AgentRequest], Awaitable[None]]:
    async def handler(request: AgentRequest) -> None:
        await request.body()
        request.respond(200, [(b"Content-Length", str(len(label)).encode())])
        await request.send(label.encode(), end=True)

    return handler


async def test_a_member_that_said_goaway_gets_no_new_requests_while_its_own_finish() -> None:
    async with running_relay() as relay:
        a = await connect_agent(relay, "api", handler=answering("a"), pool=True)
        b = await connect_agent(relay, "api", handler=answering("b"), pool=True)
        try:
            a.conn.send_goaway(ErrorCode.NO_ERROR, "the agent is stopping")
            a.flush()
            await async_wait_for(lambda: relay._tunnels["api"].members[0].draining, what="the relay to hear the GOAWAY")
            async with client() as c:
                assert [(await get(c, relay)).text for _ in range(4)] == ["b"] * 4
                await b.close()
                await async_wait_for(lambda: relay.agents == {"api": 1}, what="b to leave")
                # Only the leaving member is left: as for a lone agent that is leaving, 503.
                response = await get(c, relay)
            assert response.status_code == 503 and "restarting" in response.text
        finally:
            await a.close()
            await b.close()


def refusing(*, leave: bool) -> Callable[[AgentRequest], Awaitable[None]]:
    """A member that refuses each request with REFUSED_STREAM: as its connection does with a
    REQUEST that arrives after its GOAWAY (``leave``: it says GOAWAY first), or over its
    maximum of streams."""

    async def handler(request: AgentRequest) -> None:
        if leave:
            request.agent.conn.send_goaway(ErrorCode.NO_ERROR, "the agent is stopping")
        request.agent.conn.reset_stream(request.id, ErrorCode.REFUSED_STREAM)
        request.agent.flush()

    return handler


@asynccontextmanager
async def pool_of(direct: bool, *handlers: Callable[[AgentRequest], Awaitable[None]]
                  ) -> AsyncIterator[tuple[Relay, list[ScriptedAgent], list[bytes]]]:
    """A relay and a pool of agents answering with ``handlers`` (the first is first in turn),
    and the targets the ASGI task path answered: the direct path takes what it can, or with
    ``direct`` false nothing (as tests/net/test_relay_direct_as_task.py does)."""
    with task_path_spied(direct) as tasks:
        async with running_relay() as relay:
            agents: list[ScriptedAgent] = []
            try:
                for handler in handlers:
                    agents.append(await connect_agent(relay, "api", handler=handler, pool=True))
                yield relay, agents, tasks
            finally:
                for agent in agents:
                    await agent.close()


async def exchange(relay: Relay, data: bytes, *, until_head: bool = False) -> bytes:
    """What the relay answers a client that sends ``data`` (a request with Connection: close),
    read to the end (``until_head``: to the end of the response head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(data)
        await writer.drain()
        read = reader.readuntil(b"\r\n\r\n") if until_head else reader.read(-1)
        return await asyncio.wait_for(read, 20)
    finally:
        writer.close()


async def nothing_held(relay: Relay) -> None:
    """Every stream of every member is over, and no client holds a slot on any."""
    members = relay._tunnels["api"].members
    await async_wait_for(
        lambda: all(not m.streams and not m.conn.open_streams for m in members) and not relay._slots._held,
        what="every stream and client slot to be given back",
    )


def _request(method: bytes, target: bytes, headers: bytes = b"", body: bytes = b"") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\nHost: api.localhost\r\n" + headers + b"Connection: close\r\n\r\n" + body


PATHS = {"direct path": True, "task path": False}
RESENDABLE = {
    "GET": _request(b"GET", b"/who?x=1", b"X-Mine: 1\r\n"),
    "POST": _request(b"POST", b"/form", b"Content-Type: text/plain\r\nContent-Length: 11\r\n", b"hello world"),
    "chunked POST": _request(b"POST", b"/c", b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    "POST of 16 KiB": _request(b"POST", b"/big", b"Content-Length: 16384\r\n", bytes(range(256)) * 64),
}


def _took_path(direct: bool, tasks: list[bytes], count: int) -> None:
    """The requests went the way the test meant (none silently took the other path)."""
    assert len(tasks) == (0 if direct else count), tasks


@pytest.mark.parametrize("kind", list(RESENDABLE))
@pytest.mark.parametrize("path", list(PATHS))
async def test_a_request_that_crossed_a_leaving_members_goaway_is_answered_by_another_member(path: str, kind: str) -> None:
    request = RESENDABLE[kind]
    async with pool_of(PATHS[path], refusing(leave=True), echo) as (relay, (a, b), tasks):
        resent = await exchange(relay, request)  # to a (first in turn), which refuses it: then to b
        assert (len(a.requests), len(b.requests)) == (1, 1)
        assert a.goaway is None and relay._tunnels["api"].members[0].draining
        straight = await exchange(relay, request)  # a is leaving: to b at once
        assert len(b.requests) == 2
        # The client of the refused request gets what b answers it, byte for byte: b saw the
        # same head and the same body.
        assert resent == straight
        assert resent.startswith(b"HTTP/1.1 200 ")
        assert resent.endswith(b"body=" + request.partition(b"\r\n\r\n")[2].replace(
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"))
        _took_path(PATHS[path], tasks, 2)
        await nothing_held(relay)


@pytest.mark.parametrize("path", list(PATHS))
async def test_a_refused_request_holds_the_client_slot_of_the_member_it_went_to(path: str) -> None:
    release = asyncio.Event()

    async def held(request: AgentRequest) -> None:
        await release.wait()
        await echo(request)

    async with pool_of(PATHS[path], refusing(leave=True), held) as (relay, (a, b), _):
        a_link, b_link = relay._tunnels["api"].members
        answer = asyncio.ensure_future(exchange(relay, RESENDABLE["POST"]))
        try:
            await async_wait_for(lambda: b.requests, what="the request to reach b")
            assert (relay._slots.held(a_link, "127.0.0.1"), relay._slots.held(b_link, "127.0.0.1")) == (0, 1)
            assert (len(a_link.streams), len(b_link.streams)) == (0, 1)
        finally:
            release.set()
        assert (await answer).startswith(b"HTTP/1.1 200 ")
        await nothing_held(relay)


@pytest.mark.parametrize("path", list(PATHS))
async def test_a_refused_request_whose_body_the_relay_did_not_keep_gets_the_502(path: str) -> None:
    # Larger than the relay keeps (KEPT_BODY): what went to a is gone, it cannot be sent again.
    request = _request(b"POST", b"/big", b"Content-Length: 16385\r\n", b"x" * (KEPT_BODY + 1))
    async with pool_of(PATHS[path], refusing(leave=True), echo) as (relay, (a, b), tasks):
        response = await exchange(relay, request)
        assert response.startswith(b"HTTP/1.1 502 ") and b"went offline before answering" in response
        assert (len(a.requests), len(b.requests)) == (1, 0)
        _took_path(PATHS[path], tasks, 1)
        await nothing_held(relay)


async def test_a_refused_request_whose_body_is_still_arriving_gets_the_502() -> None:
    # The task path: half the body is sent, the rest never comes before the refusal.
    async with pool_of(True, refusing(leave=True), echo) as (relay, (a, b), tasks):
        response = await exchange(relay, _request(b"POST", b"/half", b"Content-Length: 10\r\n", b"hello"), until_head=True)
        assert response.startswith(b"HTTP/1.1 502 ")
        assert (len(a.requests), len(b.requests)) == (1, 0) and tasks == [b"/half"]
        await nothing_held(relay)


@pytest.mark.parametrize("same", [True, False], ids=["same rules", "other rules"])
@pytest.mark.parametrize("path", list(PATHS))
async def test_a_refused_request_goes_only_to_a_member_with_the_same_rules(path: str, same: bool) -> None:
    # The decision of the rules is a's (judged once): it holds for b only if b has a's rules.
    rules = [Rule(index=1, action="headers", request_set=(("X-Rule", "1"),))]
    async with pool_of(PATHS[path], refusing(leave=True), echo) as (relay, (a, b), tasks):
        a_link, b_link = relay._tunnels["api"].members
        relay._forward_http.rules.add(b_link, rules)
        if same:
            relay._forward_http.rules.add(a_link, rules)
        response = await exchange(relay, RESENDABLE["GET"])
        if same:
            assert response.startswith(b"HTTP/1.1 200 ") and b"\nX-Rule: 1\n" in response
            assert (len(a.requests), len(b.requests)) == (1, 1)
        else:
            assert response.startswith(b"HTTP/1.1 502 ")
            assert (len(a.requests), len(b.requests)) == (1, 0)
        _took_path(PATHS[path], tasks, 1)
        await nothing_held(relay)


@pytest.mark.parametrize("path", list(PATHS))
async def test_a_request_that_crossed_the_goaway_of_the_only_member_gets_the_502_of_a_member_that_left(
    path: str,
) -> None:
    async with pool_of(PATHS[path], refusing(leave=True)) as (relay, _, tasks):
        response = await exchange(relay, RESENDABLE["POST"])
        assert response.startswith(b"HTTP/1.1 502 ") and b"went offline before answering" in response
        _took_path(PATHS[path], tasks, 1)
        await nothing_held(relay)


@pytest.mark.parametrize("path", list(PATHS))
async def test_a_request_refused_by_a_full_member_is_answered_by_another_with_room(path: str) -> None:
    async with pool_of(PATHS[path], refusing(leave=False), echo) as (relay, (a, b), tasks):
        resent = await exchange(relay, RESENDABLE["POST"])
        assert (len(a.requests), len(b.requests)) == (1, 1)
        assert not relay._tunnels["api"].members[0].draining
        assert resent.startswith(b"HTTP/1.1 200 ") and resent.endswith(b"body=hello world")
        _took_path(PATHS[path], tasks, 1)
        await nothing_held(relay)


@pytest.mark.parametrize("path", list(PATHS))
async def test_requests_sent_to_another_member_are_logged_rate_limited_with_the_path_cut(
        path: str, caplog: pytest.LogCaptureFixture) -> None:
    # A public client causes one of these per request while a member refuses: one line per
    # interval and a count, not a line of up to 64 KiB each.
    long_path = b"/" + b"p" * 5000
    with caplog.at_level(logging.INFO, logger="devtunnel.relay"):
        async with pool_of(PATHS[path], refusing(leave=False), echo) as (relay, (a, b), _):
            for _ in range(3):
                assert (await exchange(relay, _request(b"GET", long_path))).startswith(b"HTTP/1.1 200 ")
            assert (len(a.requests), len(b.requests)) == (3, 3)
            await nothing_held(relay)
    lines = [r.getMessage() for r in caplog.records if "refused by agent" in r.getMessage()]
    assert len(lines) == 1, lines
    assert " /" + "p" * 199 + "… (4801 more characters) refused" in lines[0] and len(lines[0]) < 600
    assert any(r.getMessage() == "2 more requests sent to another agent of their pool after a refusal in the last 10 s"
               for r in caplog.records)


@pytest.mark.parametrize("path", list(PATHS))
async def test_a_request_every_member_refuses_gets_the_503_of_a_busy_tunnel_once_each_refused(path: str) -> None:
    async with pool_of(PATHS[path], refusing(leave=False), refusing(leave=False)) as (relay, (a, b), tasks):
        response = await exchange(relay, RESENDABLE["GET"])
        assert response.startswith(b"HTTP/1.1 503 ") and b"tunnel api is busy" in response
        assert (len(a.requests), len(b.requests)) == (1, 1)  # each once: no loop between them
        _took_path(PATHS[path], tasks, 1)
        await nothing_held(relay)


async def test_a_member_carrying_its_maximum_of_requests_is_passed_over_while_another_has_room() -> None:
    release = asyncio.Event()

    async def hold(request: AgentRequest) -> None:
        await release.wait()
        await answering("a")(request)

    async with running_relay(max_streams=2, client_share=1) as relay:
        a = await connect_agent(relay, "api", handler=hold, pool=True)
        b = await connect_agent(relay, "api", handler=answering("b"), pool=True)
        try:
            async with client() as c:
                first = [asyncio.ensure_future(get(c, relay)) for _ in range(4)]  # a, b, a, b
                await async_wait_for(lambda: len(a.requests) == 2 and len(b.requests) == 2, what="two requests each")
                # a is full: every request goes to b, none gets the 503 of a full tunnel.
                assert [(await get(c, relay)).text for _ in range(4)] == ["b"] * 4
                release.set()
                assert sorted([(await r).text for r in first]) == ["a", "a", "b", "b"]
        finally:
            release.set()
            await a.close()
            await b.close()


async def test_an_agent_that_vanishes_without_closing_is_dropped_and_requests_keep_succeeding() -> None:
    concurrency = 4
    async with running_relay(ping_interval=0.3, ping_timeout=0.5) as relay:
        proxy = SilentDropProxy(relay.port)
        await proxy.start()
        try:
            async with pool_agent(f"ws://127.0.0.1:{proxy.port}", "a"), pool_agent(relay_ws(relay), "b"):
                assert relay.agents == {"api": 2}
                proxy.down = True
                await proxy.drop()  # the relay's side stays open and silent
                answered, failed = await load(relay, 60, concurrency)
                assert relay.agents == {"api": 1}
                # Requests sent to the vanished agent before the liveness check dropped it fail
                # (at most one per client worker); all the others are answered by the other agent.
                assert 1 <= len(failed) <= concurrency, failed
                assert set(failed) <= {502}, failed
                assert set(answered) == {"b"}
                async with client() as c:
                    assert [(await get(c, relay)).text for _ in range(10)] == ["b"] * 10
        finally:
            await proxy.close()


async def test_a_pool_member_coming_back_after_a_network_drop_rejoins_at_once() -> None:
    # Neither the liveness check nor the keepalive can notice in time: only the instance id can.
    async with running_relay(name_check_timeout=60, ping_interval=60, ping_timeout=60) as relay:
        proxy = SilentDropProxy(relay.port)
        await proxy.start()
        try:
            async with pool_agent(f"ws://127.0.0.1:{proxy.port}", "a") as a, pool_agent(relay_ws(relay), "b"):
                states: list[TunnelState] = []
                a.subscribe(lambda changed: states.append(changed.state))
                await proxy.drop()
                await async_wait_for(lambda: states[-1:] == [TunnelState.ONLINE], timeout=15, what="back online")
                assert TunnelState.RECONNECTING in states
                assert relay.agents == {"api": 2}  # the stale connection made way for the new one
                async with client() as c:
                    labels = {(await get(c, relay)).text for _ in range(4)}
                assert labels == {"a", "b"}
                assert a.tunnels()[0].pool_members == 2
        finally:
            await proxy.close()


# -- refusals ----------------------------------------------------------------------------------------
async def test_an_agent_asking_alone_for_a_pooled_name_is_refused_and_told_to_add_pool() -> None:
    async with running_relay(name_check_timeout=0.5) as relay:
        async with pool_agent(relay_ws(relay), "a"):
            with pytest.raises(NameInUseError, match=r"shared by a pool of 1 agent \(--pool\).*add --pool"):
                async with pool_agent(relay_ws(relay), "b", pool=False):
                    pass
            assert relay.agents == {"api": 1}
            async with client() as c:
                assert (await get(c, relay)).text == "a"


async def test_an_agent_asking_to_pool_a_name_held_alone_is_refused() -> None:
    async with running_relay(name_check_timeout=0.5) as relay:
        async with pool_agent(relay_ws(relay), "a", pool=False):
            with pytest.raises(NameInUseError, match=r"held by an agent that does not share it \(no --pool\)"):
                async with pool_agent(relay_ws(relay), "b"):
                    pass
            assert relay.agents == {"api": 1}


async def test_an_agent_alone_takes_the_name_of_a_pool_whose_every_member_is_silent() -> None:
    async with running_relay(name_check_timeout=0.3, ping_interval=60, ping_timeout=60) as relay:
        proxy = SilentDropProxy(relay.port)
        await proxy.start()
        try:
            async with pool_agent(f"ws://127.0.0.1:{proxy.port}", "a"):
                proxy.down = True
                await proxy.drop()  # the relay still holds the member's connection
                async with pool_agent(relay_ws(relay), "b", pool=False):
                    assert relay.agents == {"api": 1}
                    async with client() as c:
                        assert [(await get(c, relay)).text for _ in range(3)] == ["b"] * 3
                        page = await c.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "localhost"})
                    assert "pool" not in page.text
        finally:
            await proxy.close()


async def test_an_agent_with_other_rules_cannot_join_a_pool() -> None:
    # Each member's rules judge the requests it takes: a member without the pool's basic auth
    # would let every other request past it.
    auth = parse_rules([{"action": "basic-auth", "users": ["admin:s3cret"]}], "edge.toml")
    async with running_relay(name_check_timeout=0.5) as relay:
        async with pool_agent(relay_ws(relay), "a", rules=auth):
            for other in ((), parse_rules([{"action": "basic-auth", "users": ["admin:other"]}], "edge.toml")):
                with pytest.raises(NameInUseError, match=r"rules differ from this agent's.*same rules"):
                    async with pool_agent(relay_ws(relay), "b", rules=other):
                        pass
            assert relay.agents == {"api": 1}
            async with pool_agent(relay_ws(relay), "c", rules=auth):
                assert relay.agents == {"api": 2}
                async with client() as c:
                    assert {(await get(c, relay)).status_code for _ in range(4)} == {401}


async def test_a_member_with_the_pools_rules_joins_whatever_drills_the_members_carry() -> None:
    # The inspector's drill changes one member's rules through its agent; a member that restarts
    # (same command, same rules) was refused as "rules differ" and the pool shrank for good.
    auth = parse_rules([{"action": "basic-auth", "users": ["admin:s3cret"]}], "edge.toml")
    async with running_relay(name_check_timeout=0.5) as relay:
        async with pool_agent(relay_ws(relay), "a", rules=auth) as a:
            async with pool_agent(relay_ws(relay), "b", rules=auth):
                a.add_rule("api", {"match": "path:/who", "action": "respond", "status": 503, "count": 1})
                await async_wait_for(lambda: len(relay.rules_of("api").rules) == 2, what="the drill at the relay")
            assert relay.agents == {"api": 1}
            async with pool_agent(relay_ws(relay), "b again", rules=auth):
                assert relay.agents == {"api": 2}
                async with client() as c:
                    assert sorted([(await get(c, relay)).status_code for _ in range(3)]) == [401, 401, 503]
            with pytest.raises(NameInUseError, match=r"rules differ from this agent's"):
                async with pool_agent(relay_ws(relay), "c", rules=()):
                    pass
            # A member whose drill outlived its connection (its agent keeps its rules) comes back.
            drilled = parse_rules([{"match": "path:/x", "action": "respond", "status": 500},
                                   {"action": "basic-auth", "users": ["admin:s3cret"]}], "edge.toml")
            async with pool_agent(relay_ws(relay), "d", rules=drilled):
                assert relay.agents == {"api": 2}


async def test_the_members_of_a_pool_share_their_rules_counts_and_rate_limits() -> None:
    rules = parse_rules([{"action": "rate-limit", "rate": "5/m"},
                         {"match": "path:/who", "action": "respond", "status": 500, "count": 3}], "edge.toml")
    async with running_relay() as relay:
        async with pool_agent(relay_ws(relay), "a", rules=rules), pool_agent(relay_ws(relay), "b", rules=rules):
            assert relay.agents == {"api": 2}
            async with client() as c:
                statuses = [(await get(c, relay)).status_code for _ in range(7)]
    assert statuses == [500, 500, 500, 200, 200, 429, 429]


async def test_a_member_whose_drill_is_removed_counts_its_rate_limit_with_the_pool_again() -> None:
    # Before, it kept buckets of its own: a client got the pool's rate once more on that member.
    rules = parse_rules([{"action": "rate-limit", "rate": "3/m"}], "edge.toml")
    async with running_relay() as relay:
        async with pool_agent(relay_ws(relay), "a", rules=rules) as a, pool_agent(relay_ws(relay), "b", rules=rules):
            async with client() as c:
                assert [(await get(c, relay)).status_code for _ in range(2)] == [200, 200]
                a.add_rule("api", {"match": "path:/nothing", "action": "respond", "status": 500})
                await async_wait_for(lambda: len(relay.rules_of("api").rules) == 2, what="the drill at the relay")
                a.remove_rule("api", 1)
                await async_wait_for(lambda: len(relay.rules_of("api").rules) == 1, what="the drill gone")
                assert [(await get(c, relay)).status_code for _ in range(3)] == [200, 429, 429]


async def test_an_agent_with_another_token_cannot_join_a_pool() -> None:
    async with running_relay() as relay:
        async with pool_agent(relay_ws(relay), "a"):
            with pytest.raises(NameTakenError, match="another token") as caught:
                async with pool_agent(relay_ws(relay), "b", token="other-token"):
                    pass
            assert not isinstance(caught.value, NameInUseError)
            assert relay.agents == {"api": 1}


async def test_a_pool_needs_a_name() -> None:
    with pytest.raises(ConfigError, match="--name NAME --pool"):
        TunnelConfig(target="8000", pool=True)


@asynccontextmanager
async def relay_without_pools() -> AsyncIterator[tuple[int, list[Hello], list[GoAway]]]:
    """A relay of before pools: it ignores the HELLO's pool and welcomes the agent as it always
    did; yields (port, the HELLOs it got, the GOAWAYs the agents sent)."""
    hellos: list[Hello] = []
    goaways: list[GoAway] = []

    async def serve(ws: Any) -> None:
        conn = RelayConnection()
        try:
            async for message in ws:
                for event in conn.receive_data(message):
                    if isinstance(event, Hello):
                        hellos.append(event)
                        conn.send_welcome(event.name or "x", f"http://{event.name}.localhost")
                    elif isinstance(event, GoAway):
                        goaways.append(event)
                data = conn.data_to_send()
                if data:
                    await ws.send(data)
        except websockets.ConnectionClosed:
            pass

    async with websockets.serve(serve, "127.0.0.1", 0, compression=None) as server:
        yield next(iter(server.sockets)).getsockname()[1], hellos, goaways


async def test_an_agent_asking_for_a_pool_at_a_relay_without_pools_says_so_and_leaves() -> None:
    async with relay_without_pools() as (port, hellos, goaways):
        with pytest.raises(TunnelError, match="does not support pools.*without --pool"):
            async with pool_agent(f"ws://127.0.0.1:{port}", "a"):
                pass
        assert hellos and hellos[0].pool is True
        await async_wait_for(lambda: goaways, what="the agent to leave the relay")


# -- the command ----------------------------------------------------------------------------------
async def test_the_command_joins_a_pool_from_the_flag_and_from_the_config_file(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.pop("DEVTUNNEL_RELAY", None)
    env.pop("DEVTUNNEL_TOKEN", None)
    async with running_relay() as relay, pool_agent(relay_ws(relay), "a") as a:
        (tmp_path / "devtunnel.toml").write_text(f'[tunnels.api]\ntarget = "{a.local_port}"\npool = true\n')  # type: ignore[attr-defined]
        for args in (["api"], [str(a.local_port), "--name", "api", "--pool"]):  # type: ignore[attr-defined]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "devtunnel", "http", *args, "--relay", relay_ws(relay), "--token", TOKEN,
                "--no-tui", "--api-port", "0", "--no-record",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path,
            )
            expected = f"Forwarding http://api.localhost:{relay.port} -> http://127.0.0.1:{a.local_port} (pool of 2)"  # type: ignore[attr-defined]
            lines: list[bytes] = []
            try:
                await async_wait_for(lambda: relay.agents == {"api": 2}, timeout=30, what="the command to join")
                # The relay counts the agent before the agent has read its WELCOME: wait for the line itself.
                assert proc.stdout is not None
                while not lines or lines[-1].rstrip().decode() != expected:
                    line = await asyncio.wait_for(proc.stdout.readline(), 30)
                    assert line, f"the command ended without {expected!r}: {lines}"
                    lines.append(line)
            finally:
                proc.terminate()
                await asyncio.wait_for(proc.communicate(), 30)
            await async_wait_for(lambda: relay.agents == {"api": 1}, what="the command to leave")


async def test_the_command_refused_by_a_pool_says_why_and_exits(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.pop("DEVTUNNEL_RELAY", None)
    env.pop("DEVTUNNEL_TOKEN", None)
    async with running_relay(name_check_timeout=0.5) as relay, pool_agent(relay_ws(relay), "a") as a:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devtunnel", "http", str(a.local_port), "--name", "api",  # type: ignore[attr-defined]
            "--relay", relay_ws(relay), "--token", TOKEN, "--no-tui", "--api-port", "0", "--no-record",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == EXIT_TUNNEL_REFUSED
        assert "shared by a pool of 1 agent (--pool)" in err.decode() and "Traceback" not in err.decode()
        assert b"Forwarding" not in out
        assert relay.agents == {"api": 1}


def test_the_command_refuses_pool_without_a_name(tmp_path: Path) -> None:
    import subprocess

    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    proc = subprocess.run(
        [sys.executable, "-m", "devtunnel", "http", "9", "--pool", "--no-tui", "--api-port", "0", "--no-record"],
        check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert "a pool shares a name: give the tunnel one (--name NAME --pool)" in proc.stderr and "Traceback" not in proc.stderr


def test_a_config_file_with_a_pool_that_is_not_a_boolean_is_refused_with_its_line(tmp_path: Path) -> None:
    import subprocess

    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    (tmp_path / "devtunnel.toml").write_text('[tunnels.api]\ntarget = "9"\npool = "yes"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "devtunnel", "http", "api", "--no-tui", "--api-port", "0", "--no-record"],
        check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert "devtunnel.toml:3: tunnels.api.pool: expected true or false, got 'yes'" in proc.stderr
    assert "Traceback" not in proc.stderr
