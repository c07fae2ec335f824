"""Requests the relay answers from callbacks (``HttpForwarder.direct``), and the hand-over to
the ASGI path for everything else: real sockets, a real relay, a scripted agent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devtunnel.relay.server import Relay
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import StreamReset
from tests.helpers import async_wait_for
from tests.net._relay_agent import AgentRequest, ScriptedAgent, connect_agent, forwarder_spied, running_relay

HOST = b"Host: demo.localhost\r\n"


@pytest.fixture
def asgi_calls() -> Iterator[list[bytes]]:
    """Targets of the requests that went through the ASGI path (``HttpForwarder.__call__``)."""
    with forwarder_spied() as calls:
        yield calls.tasks


async def read_responses(reader: asyncio.StreamReader, count: int) -> list[tuple[bytes, bytes]]:
    """Read ``count`` responses that carry a Content-Length: (status line, body) each."""
    responses = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
        body = await asyncio.wait_for(reader.readexactly(length), 10)
        responses.append((lines[0], body))
    return responses


async def test_requests_that_arrive_whole_are_answered_without_an_asgi_task(
    relay: Relay, agent: ScriptedAgent, asgi_calls: list[bytes]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(b"GET /plain HTTP/1.1\r\n" + HOST + b"\r\n")
        [(status, body)] = await read_responses(reader, 1)
        assert status == b"HTTP/1.1 200 OK"
        assert body.startswith(b"GET /plain\n")
        writer.write(b"POST /small HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello")
        writer.write(b"POST /chunked HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        [(_, first), (_, second)] = await read_responses(reader, 2)
        assert first.endswith(b"\nbody=hello")
        assert second.endswith(b"\nbody=abc")
        # Binary bytes and a hostile target and header (Rich markup, an encoded escape, shell
        # metacharacters) reach the agent as they were sent.
        binary = bytes(range(256))
        target = b"/a?x=[/y]&t=%1B[31m;$(rm)`id`"
        header = b"X-Odd: [bold]$(id)|&;`x`\r\n"
        writer.write(b"PUT " + target + b" HTTP/1.1\r\n" + HOST + header + b"Content-Length: 256\r\n\r\n" + binary)
        [(status, odd)] = await read_responses(reader, 1)
        assert status == b"HTTP/1.1 200 OK"
        assert odd.startswith(b"PUT " + target + b"\n")
        assert b"\nX-Odd: [bold]$(id)|&;`x`\n" in odd
        assert odd.endswith(b"\nbody=" + binary)
    finally:
        writer.close()
    assert asgi_calls == []


async def test_a_body_still_arriving_goes_through_the_asgi_path(
    relay: Relay, agent: ScriptedAgent, asgi_calls: list[bytes]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(b"POST /later HTTP/1.1\r\n" + HOST + b"Content-Length: 11\r\n\r\nhello")
        await async_wait_for(lambda: agent.requests, what="the request head to reach the agent")
        writer.write(b" world")
        [(status, body)] = await read_responses(reader, 1)
        assert status == b"HTTP/1.1 200 OK"
        assert body.endswith(b"\nbody=hello world")
    finally:
        writer.close()
    assert asgi_calls == [b"/later"]


async def test_a_body_larger_than_the_agents_first_window_goes_through_the_asgi_path(
    asgi_calls: list[bytes],
) -> None:
    async with running_relay() as relay:
        agent = await connect_agent(relay, initial_window=4096)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"POST /big HTTP/1.1\r\n" + HOST + b"Content-Length: 10000\r\n\r\n" + b"z" * 10000)
            [(_, body)] = await read_responses(reader, 1)
            writer.close()
            assert body.endswith(b"\nbody=" + b"z" * 10000)
            assert asgi_calls == [b"/big"]
        finally:
            await agent.close()


async def test_pipelined_requests_are_answered_in_order(relay: Relay, agent: ScriptedAgent) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(
            b"GET /a HTTP/1.1\r\n" + HOST + b"\r\n"
            + b"POST /b HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nxyz"
            + b"GET /c HTTP/1.1\r\n" + HOST + b"\r\n"
        )
        responses = await read_responses(reader, 3)
    finally:
        writer.close()
    assert [body.split(b"\n", 1)[0] for _, body in responses] == [b"GET /a", b"POST /b", b"GET /c"]
    assert responses[1][1].endswith(b"\nbody=xyz")


async def test_a_client_that_reads_slowly_gets_the_whole_body_and_holds_back_the_agent(relay: Relay) -> None:
    size = 8 << 20
    window_full = asyncio.Event()

    async def big(request: AgentRequest) -> None:
        await request.send_stalling(b"y" * size, window_full)

    agent = await connect_agent(relay, handler=big)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(b"GET /big HTTP/1.1\r\n" + HOST + b"\r\n")
        await asyncio.wait_for(window_full.wait(), 10)
        [(status, body)] = await read_responses(reader, 1)
        assert status == b"HTTP/1.1 200 OK"
        assert len(body) == size and body.count(b"y") == size
    finally:
        writer.close()
        await agent.close()


async def test_invalid_status_from_the_agent_gets_502(relay: Relay) -> None:
    async def odd(request: AgentRequest) -> None:
        request.respond(700, [(b"Content-Length", b"0")], end=True)

    agent = await connect_agent(relay, handler=odd)
    try:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "demo.localhost"})
        assert r.status_code == 502
        assert r.text == "tunnel demo answered with invalid status 700\n"
    finally:
        await agent.close()


async def test_a_header_the_server_refuses_is_a_502_naming_it_the_stream_is_reset_and_serving_goes_on(
    relay: Relay,
) -> None:
    resets: list[StreamReset] = []

    async def bad_header(request: AgentRequest) -> None:
        if request.event.target == b"/bad":
            request.respond(200, [(b"X-Bad", b"a\x01b"), (b"Content-Length", b"2")])
            await request.send(b"no", end=False)
            event = await request.inbox.get()
            assert isinstance(event, StreamReset)
            resets.append(event)
        else:
            request.respond(200, [(b"Content-Length", b"2")])
            await request.send(b"ok", end=True)

    agent = await connect_agent(relay, handler=bad_header)
    try:
        async with httpx.AsyncClient() as client:
            # Not an empty reply (uvicorn's refusal once the head was begun): a 502 saying which.
            bad = await client.get(f"http://127.0.0.1:{relay.port}/bad", headers={"Host": "demo.localhost"})
            assert bad.status_code == 502 and bad.headers["connection"] == "close"
            assert bad.text == "tunnel demo answered with an invalid header: the value of header 'X-Bad' holds the control byte 0x01 at 1\n"
            await async_wait_for(lambda: resets, what="the agent to see its stream reset")
            assert resets[0].code == ErrorCode.CANCEL
            r = await client.get(f"http://127.0.0.1:{relay.port}/good", headers={"Host": "demo.localhost"})
            assert (r.status_code, r.text) == (200, "ok")
    finally:
        await agent.close()


async def test_the_direct_path_frames_and_closes_as_uvicorn_does(relay: Relay, asgi_calls: list[bytes]) -> None:
    async def answer(request: AgentRequest) -> None:
        target = request.event.target
        if target == b"/empty":
            request.respond(204, [(b"Content-Length", b"0"), (b"X-A", b"1")], end=True)
        elif target == b"/stream":  # no length: chunked, each piece as it comes
            request.respond(200, [(b"Content-Type", b"text/plain")])
            await request.send(b"one")
            await request.send(b"two", end=True)
        else:
            request.respond(200, [(b"Content-Length", b"5"), (b"Connection", b"keep-alive")])
            await request.send(b"hello", end=True)

    agent = await connect_agent(relay, handler=answer)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(b"HEAD /head HTTP/1.1\r\n" + HOST + b"\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"  # and no body
        writer.write(b"GET /empty HTTP/1.1\r\n" + HOST + b"\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head == b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n"
        writer.write(b"GET /stream HTTP/1.1\r\n" + HOST + b"\r\n")
        expected = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
        expected += b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 10) == expected
        writer.write(b"GET /last HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(-1), 10)  # the relay closes after it
        assert rest == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(b"GET /old HTTP/1.0\r\n" + HOST + b"\r\n")
        rest = await asyncio.wait_for(reader.read(-1), 10)
        assert rest == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
    finally:
        writer.close()
        await agent.close()
    assert asgi_calls == []


async def test_a_kept_alive_client_sending_its_next_head_too_slowly_is_dropped() -> None:
    async with running_relay(head_timeout=0.3) as relay:
        agent = await connect_agent(relay)
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        try:
            writer.write(b"GET /first HTTP/1.1\r\n" + HOST + b"\r\n")
            [(status, _)] = await read_responses(reader, 1)
            assert status == b"HTTP/1.1 200 OK"
            writer.write(b"GET /second HTTP/1.1\r\nHost: demo.local")  # and never the rest
            response = await asyncio.wait_for(reader.read(-1), 10)
            assert response.startswith(b"HTTP/1.1 408")
        finally:
            writer.close()
            await agent.close()


async def test_a_clients_own_rule_header_never_reaches_the_agent(relay: Relay, asgi_calls: list[bytes]) -> None:
    seen: list[list[bytes]] = []

    async def answer(request: AgentRequest) -> None:
        seen.append([v for n, v in request.event.headers if n.lower() == b"devtunnel-rule"])
        request.respond(200, [(b"Content-Length", b"2")])
        await request.send(b"ok", end=True)

    agent = await connect_agent(relay, handler=answer)
    try:
        async with httpx.AsyncClient() as client:
            for spelling in ["devtunnel-rule", "DevTunnel-Rule"]:
                r = await client.get(f"http://127.0.0.1:{relay.port}/", headers={
                    "Host": "demo.localhost", spelling: "tunnel;1;forward"})
                assert r.status_code == 200
    finally:
        await agent.close()
    assert seen == [[], []]
    assert asgi_calls == []


async def test_a_whole_response_leaves_the_direct_path_in_one_write(
    relay: Relay, agent: ScriptedAgent, asgi_calls: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from devtunnel.relay.http import HeadLimitedHttpProtocol

    writes: list[int] = []

    class Counting:
        def __init__(self, transport: Any) -> None:
            self._transport = transport

        def write(self, data: bytes) -> None:
            writes.append(1)
            self._transport.write(data)

        def writelines(self, data: Any) -> None:
            writes.append(1)
            self._transport.writelines(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._transport, name)

    original = HeadLimitedHttpProtocol.connection_made

    def counting(self: HeadLimitedHttpProtocol, transport: Any) -> None:
        original(self, Counting(transport))

    monkeypatch.setattr(HeadLimitedHttpProtocol, "connection_made", counting)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        for n in range(3):
            writer.write(b"GET /one HTTP/1.1\r\n" + HOST + b"\r\n")
            [(status, body)] = await read_responses(reader, 1)
            assert status == b"HTTP/1.1 200 OK" and body.startswith(b"GET /one\n")
            assert len(writes) == n + 1, "the head and the body in one write"
    finally:
        writer.close()
    assert asgi_calls == []


async def test_a_response_is_written_while_the_tunnel_hands_out_the_message_that_completes_it(
    relay: Relay, agent: ScriptedAgent, asgi_calls: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # DirectExchange.wake runs its step once AgentLink.handle has handed out every event of the
    # agent's message (head and body together: one write, the test above), before handle returns,
    # not in a later callback of the loop. Seen from the WebSocket protocol's callback that hands
    # the message to the tunnel (``on_bytes``, where handle runs): handle itself is called from
    # relay.agents, which may run compiled and would not see it patched (devtunnel/native.py).
    from devtunnel.relay.http import DeadPeerWebSocketProtocol, HeadLimitedHttpProtocol

    written: list[bytes] = []
    after_handle: list[int] = []

    class Recording:
        def __init__(self, transport: Any) -> None:
            self._transport = transport

        def write(self, data: bytes) -> None:
            written.append(bytes(data))
            self._transport.write(data)

        def writelines(self, data: Any) -> None:
            written.append(b"".join(data))
            self._transport.writelines(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._transport, name)

    made, deliver = HeadLimitedHttpProtocol.connection_made, DeadPeerWebSocketProtocol.send_receive_event_to_app

    def recording(self: HeadLimitedHttpProtocol, transport: Any) -> None:
        made(self, Recording(transport))

    def handing_out(self: DeadPeerWebSocketProtocol) -> None:
        deliver(self)
        after_handle.append(len(written))

    monkeypatch.setattr(HeadLimitedHttpProtocol, "connection_made", recording)
    monkeypatch.setattr(DeadPeerWebSocketProtocol, "send_receive_event_to_app", handing_out)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        for n in range(3):
            writer.write(b"GET /now HTTP/1.1\r\n" + HOST + b"\r\n")
            [(status, body)] = await read_responses(reader, 1)
            assert status == b"HTTP/1.1 200 OK" and body.startswith(b"GET /now\n")
            assert len(written) == n + 1
            assert n + 1 in after_handle, "the response was written after the tunnel's handle returned"
    finally:
        writer.close()
    assert asgi_calls == []
