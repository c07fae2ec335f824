"""A relay port pinned to one tunnel (``Relay.pin``): what a ``--via`` provider forwards to.

Every request arriving there goes to that tunnel whatever Host it names of those the port
answers (loopback names, the provider's public host), on the direct path and on the ASGI path
alike; nothing else is served there (no relay pages, no agent logins).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import InvalidHandshake

from devtunnel.protocol.events import Welcome
from tests.helpers import async_wait_for
from tests.net._relay_agent import (
    AgentRequest,
    ScriptedAgent,
    connect_agent,
    forwarder_spied,
    running_relay,
)
from tests.net.test_relay_direct import read_responses


def answer(name: bytes) -> Any:
    async def handler(request: AgentRequest) -> None:
        body = await request.body()
        payload = name + b" " + request.event.target + b" " + body
        request.respond(200, [(b"Content-Length", str(len(payload)).encode())])
        await request.send(payload, end=True)

    return handler


@pytest.fixture
def asgi_calls() -> Iterator[list[bytes]]:
    """Targets of the requests that went through the ASGI path (``HttpForwarder.__call__``)."""
    with forwarder_spied() as calls:
        yield calls.tasks


async def exchange(port: int, raw: bytes, later: bytes = b"", *, wait_for: ScriptedAgent | None = None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        if later:
            assert wait_for is not None
            target = raw.split(b" ", 2)[1]
            await async_wait_for(lambda: any(r.event.target == target for r in wait_for.requests.values()),
                                 what="the head to reach the agent while the body is still to come")
            writer.write(later)
        [(status, body)] = await read_responses(reader, 1)
        assert status == b"HTTP/1.1 200 OK", (status, body)
        return body
    finally:
        writer.close()


async def test_every_request_on_a_pinned_port_goes_to_its_tunnel_whatever_the_host(asgi_calls: list[bytes]) -> None:
    async with running_relay(embedded=True) as relay:
        alpha = await connect_agent(relay, name="alpha", handler=answer(b"alpha"))
        beta = await connect_agent(relay, name="beta", handler=answer(b"beta"))
        try:
            port = await relay.pin("beta")
            assert port not in (0, relay.port)
            relay.serve_host(port, "https://words-here.trycloudflare.com")
            for host in (b"alpha.localhost", b"127.0.0.1:%d" % port, b"words-here.trycloudflare.com",
                         b"localhost", b""):
                body = await exchange(port, b"GET /hook HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
                assert body == b"beta /hook ", host
            # the relay's own pages and its agent endpoint are the tunnel's paths there
            assert await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n") == b"beta /healthz "
            assert await exchange(port, b"GET /_devtunnel/connect HTTP/1.1\r\nHost: localhost\r\n\r\n") == \
                b"beta /_devtunnel/connect "
            assert asgi_calls == []
            # the ASGI path (a body still arriving) routes the same way
            body = await exchange(port, b"POST /slow HTTP/1.1\r\nHost: alpha.localhost\r\nContent-Length: 11\r\n\r\nhello",
                                  b" world", wait_for=beta)
            assert body == b"beta /slow hello world"
            assert asgi_calls == [b"/slow"]
            # the main port still routes by Host (and to the oldest tunnel otherwise)
            assert await exchange(relay.port, b"GET / HTTP/1.1\r\nHost: beta.localhost\r\n\r\n") == b"beta / "
            assert await exchange(relay.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == b"alpha / "
        finally:
            await alpha.close()
            await beta.close()


async def test_no_agent_logs_in_through_a_pinned_port() -> None:
    async with running_relay(embedded=True) as relay:
        beta = await connect_agent(relay, name="beta", handler=answer(b"beta"))
        try:
            port = await relay.pin("beta")
            intruder = ScriptedAgent(port, name="intruder")
            try:
                result = await intruder.connect()
            except InvalidHandshake:
                result = None
            assert not isinstance(result, Welcome)
            assert relay.tunnels == ["beta"]
            await intruder.close()
        finally:
            await beta.close()


async def test_a_pinned_port_whose_tunnel_is_offline_answers_404_and_unpin_closes_it() -> None:
    async with running_relay(embedded=True) as relay:
        alpha = await connect_agent(relay, name="alpha", handler=answer(b"alpha"))
        beta = await connect_agent(relay, name="beta", handler=answer(b"beta"))
        port = await relay.pin("beta")
        await beta.close()
        await async_wait_for(lambda: "beta" not in relay.tunnels, what="beta to go offline")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            [(status, _)] = await read_responses(reader, 1)
            writer.close()
            assert status.startswith(b"HTTP/1.1 404"), "never another tunnel's traffic"
            relay.unpin(port)
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)
        finally:
            await alpha.close()
