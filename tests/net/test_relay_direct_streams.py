"""A streamed response through the relay's direct path (``relay.http_direct.DirectExchange``): each
part reaches the public client as the agent sends it, on a kept-alive client connection."""

from __future__ import annotations

import asyncio

from devtunnel.relay.server import Relay
from tests.net._relay_agent import AgentRequest, connect_agent
from tests.net.test_relay_direct import HOST, asgi_calls  # noqa: F401  (a fixture)


async def read_until(reader: asyncio.StreamReader, buffer: bytearray, marker: bytes) -> None:
    """Read into ``buffer`` until it holds ``marker`` (bounded by the caller's timeout)."""
    while marker not in buffer:
        data = await reader.read(65536)
        assert data, f"the relay closed the connection before {marker!r}"
        buffer += data


async def test_events_reach_the_client_one_by_one_on_a_kept_alive_connection(
    relay: Relay, asgi_calls: list[bytes]  # noqa: F811
) -> None:
    # The agent sends the second event only once the client received the first: a relay that
    # held the first back would leave the client waiting until the deadline.
    released: dict[bytes, asyncio.Event] = {}

    async def events(request: AgentRequest) -> None:
        request.respond(200, [(b"Content-Type", b"text/event-stream")])
        await request.send(b"data: first\n\n")
        await asyncio.wait_for(released[request.event.target].wait(), 15)
        await request.send(b"data: second\n\n", end=True)

    agent = await connect_agent(relay, handler=events)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        for n in range(3):
            target = b"/events?n=%d" % n
            released[target] = asyncio.Event()
            writer.write(b"GET " + target + b" HTTP/1.1\r\n" + HOST + b"\r\n")
            got = bytearray()
            async with asyncio.timeout(10):
                await read_until(reader, got, b"data: first\n\n")
                assert got.startswith(b"HTTP/1.1 200 OK\r\n")
                assert b"data: second" not in got
                released[target].set()
                await read_until(reader, got, b"\r\n0\r\n\r\n")
            head, _, body = bytes(got).partition(b"\r\n\r\n")
            assert b"transfer-encoding: chunked" in head.lower()
            assert body == b"d\r\ndata: first\n\n\r\ne\r\ndata: second\n\n\r\n0\r\n\r\n"
    finally:
        writer.close()
        await agent.close()
    assert asgi_calls == []
