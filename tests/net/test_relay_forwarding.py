"""What the relay does to requests and responses on their way through a tunnel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from devtunnel.relay.server import Relay
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import StreamReset
from tests.helpers import async_wait_for
from tests.net._relay_agent import AgentRequest, ScriptedAgent, connect_agent, running_relay


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with running_relay(max_body=1000) as r:
        yield r


async def raw_exchange(port: int, data: bytes, *, read_until_close: bool = True) -> bytes:
    """Send raw bytes to the relay and read what comes back until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1) if read_until_close else reader.read(65536), 10)
    finally:
        writer.close()


async def test_forwarded_headers_set_and_hop_by_hop_removed(relay: Relay, agent: ScriptedAgent) -> None:
    request = (
        b"GET /h HTTP/1.1\r\nHost: demo.localhost\r\nConnection: keep-alive, X-Private\r\nX-Private: secret\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\n"
        b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: gopher\r\nX-Kept: yes\r\nConnection: close\r\n\r\n"
    )
    response = await raw_exchange(relay.port, request)
    assert response.startswith(b"HTTP/1.1 200")
    seen = next(iter(agent.requests.values())).event
    names = [n.lower() for n, _ in seen.headers]
    for gone in (b"connection", b"x-private", b"keep-alive", b"proxy-connection", b"te", b"upgrade"):
        assert gone not in names
    headers = {n.lower(): v for n, v in seen.headers}
    assert headers[b"host"] == b"demo.localhost"
    assert headers[b"x-forwarded-for"] == b"203.0.113.7, 127.0.0.1"
    assert headers[b"x-forwarded-proto"] == b"http"
    assert headers[b"x-forwarded-host"] == b"demo.localhost"
    assert headers[b"x-kept"] == b"yes"
    assert names.count(b"x-forwarded-proto") == 1
    assert seen.remote_addr == "127.0.0.1"


async def test_host_kept_and_raw_target_bytes_forwarded_unchanged(relay: Relay, agent: ScriptedAgent) -> None:
    target = b"/a%2Fb//c;v=1/%7Euser?q=%20x&q=2&empty=&flag"
    await raw_exchange(relay.port, b"GET " + target + b" HTTP/1.1\r\nHost: Demo.LOCALHOST:" + str(relay.port).encode()
                       + b"\r\nConnection: close\r\n\r\n")
    seen = next(iter(agent.requests.values())).event
    assert seen.target == target
    assert seen.headers[0] == (b"Host", b"Demo.LOCALHOST:" + str(relay.port).encode())


async def test_request_header_names_keep_the_clients_case(relay: Relay, agent: ScriptedAgent) -> None:
    await raw_exchange(relay.port, b"GET / HTTP/1.1\r\nhOsT: demo.localhost\r\nX-Stripe-Signature: t=1\r\n"
                       b"x-lower: 1\r\nConnection: close\r\n\r\n")
    seen = next(iter(agent.requests.values())).event
    assert [n for n, _ in seen.headers][:3] == [b"hOsT", b"X-Stripe-Signature", b"x-lower"]


async def test_repeated_headers_keep_their_order_both_ways(relay: Relay) -> None:
    async def cookies(request: AgentRequest) -> None:
        request.respond(200, [(b"Set-Cookie", b"a=1"), (b"X-Other", b"x"), (b"Set-Cookie", b"b=2"),
                              (b"Content-Length", b"0")], end=True)

    agent = await connect_agent(relay, handler=cookies)
    try:
        response = await raw_exchange(relay.port, b"GET / HTTP/1.1\r\nHost: demo.localhost\r\nX-A: 1\r\nX-B: 2\r\n"
                                      b"X-A: 3\r\nConnection: close\r\n\r\n")
        seen = next(iter(agent.requests.values())).event
        assert [(n, v) for n, v in seen.headers if n in (b"X-A", b"X-B")] == [(b"X-A", b"1"), (b"X-B", b"2"), (b"X-A", b"3")]
        head = response.split(b"\r\n\r\n")[0].lower()
        assert head.index(b"set-cookie: a=1") < head.index(b"x-other: x") < head.index(b"set-cookie: b=2")
    finally:
        await agent.close()


async def test_streamed_response_reaches_client_chunk_by_chunk(relay: Relay) -> None:
    received = asyncio.Event()

    async def events(request: AgentRequest) -> None:
        request.respond(200, [(b"Content-Type", b"text/event-stream")])
        for i in range(3):
            received.clear()
            await request.send(b"data: %d\n\n" % i)
            await asyncio.wait_for(received.wait(), 5)  # the next event only once the client saw this one
        await request.send(b"", end=True)

    agent = await connect_agent(relay, handler=events)
    try:
        seen = []
        async with httpx.AsyncClient() as client:
            async with client.stream("GET", f"http://127.0.0.1:{relay.port}/events",
                                     headers={"Host": "demo.localhost"}) as response:
                assert response.headers["content-type"] == "text/event-stream"
                async for chunk in response.aiter_raw():
                    seen.append(chunk)
                    received.set()
        assert seen == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    finally:
        await agent.close()


async def test_request_body_streams_within_the_agents_window() -> None:
    first_part_seen = asyncio.Event()
    sizes: list[int] = []

    async def counting_reader(request: AgentRequest) -> None:
        total = 0
        async for chunk in request.chunks():
            sizes.append(len(chunk))
            total += len(chunk)
            first_part_seen.set()
        request.respond(200, [(b"Content-Length", str(len(str(total))).encode())])
        await request.send(str(total).encode(), end=True)

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 20000
        await asyncio.wait_for(first_part_seen.wait(), 5)  # streamed: the agent has bytes before we send more
        yield b"b" * 30000

    async with running_relay() as relay:
        # A 4 KiB window: the relay may never have more than 4 KiB unacknowledged in flight
        # (the agent's protocol connection fails the tunnel if it does).
        agent = await connect_agent(relay, handler=counting_reader, initial_window=4096)
        try:
            async with httpx.AsyncClient() as client:
                r = await client.post(f"http://127.0.0.1:{relay.port}/up", headers={"Host": "demo.localhost"},
                                      content=body())
            assert (r.status_code, r.text) == (200, "50000")
            assert max(sizes) <= 4096
            assert sum(sizes) == 50000
        finally:
            await agent.close()


async def test_content_length_over_max_body_gets_413_without_reaching_agent(relay: Relay, agent: ScriptedAgent) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"http://127.0.0.1:{relay.port}/", headers={"Host": "demo.localhost"}, content=b"x" * 2000)
    assert r.status_code == 413
    assert "larger than" in r.text
    assert agent.requests == {}


async def test_chunked_body_passing_max_body_gets_413_and_stream_reset(relay: Relay) -> None:
    resets: list[int] = []

    async def reader(request: AgentRequest) -> None:
        try:
            await request.body()
        except ConnectionResetError:
            resets.append(request.id)

    agent = await connect_agent(relay, handler=reader)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 300

    try:
        async with httpx.AsyncClient() as client:
            r = await client.post(f"http://127.0.0.1:{relay.port}/", headers={"Host": "demo.localhost"}, content=body())
        assert r.status_code == 413
        await async_wait_for(lambda: resets, what="the agent to see the reset")
        reset = agent.requests[resets[0]]
        assert reset.ended is False
    finally:
        await agent.close()


async def test_oversized_head_gets_431(relay: Relay, agent: ScriptedAgent) -> None:
    big = b"X-Big: " + b"z" * (70 * 1024) + b"\r\n"
    response = await raw_exchange(relay.port, b"GET / HTTP/1.1\r\nHost: demo.localhost\r\n" + big + b"\r\n")
    assert response.startswith(b"HTTP/1.1 431")
    assert agent.requests == {}


async def test_oversized_head_trickled_in_pieces_gets_431(relay: Relay) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: demo.localhost\r\nX-Big: ")
    for _ in range(80):
        writer.write(b"z" * 1024)
        await writer.drain()
        if reader.at_eof():
            break
    response = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    assert response.startswith(b"HTTP/1.1 431")


async def test_client_sending_its_head_too_slowly_is_dropped() -> None:
    async with running_relay(head_timeout=0.3) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: demo.local")  # and never the rest
        await writer.drain()
        response = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
        assert response.startswith(b"HTTP/1.1 408")
        assert reader.at_eof()


async def test_garbage_gets_400_and_the_next_request_is_served(relay: Relay, agent: ScriptedAgent) -> None:
    response = await raw_exchange(relay.port, b"\x16\x03\x01 this is not http\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400")
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{relay.port}/after", headers={"Host": "demo.localhost"})
    assert r.status_code == 200
    assert r.text.startswith("GET /after")


async def test_agent_gone_before_answering_gives_502(relay: Relay) -> None:
    agent: ScriptedAgent

    async def vanish_now(request: AgentRequest) -> None:
        agent.abort()

    agent = await connect_agent(relay, handler=vanish_now)
    try:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "demo.localhost"})
        assert r.status_code == 502
        assert "went offline" in r.text
    finally:
        await agent.close()


async def test_agent_gone_mid_response_aborts_the_client_connection(relay: Relay) -> None:
    agent: ScriptedAgent

    async def half_then_vanish(request: AgentRequest) -> None:
        request.respond(200, [(b"Content-Length", b"100")])
        await request.send(b"x" * 10)
        await asyncio.sleep(0.05)
        agent.abort()

    agent = await connect_agent(relay, handler=half_then_vanish)
    try:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "demo.localhost"})
    finally:
        await agent.close()


async def test_agent_reset_with_local_refused_passes_reason_as_502(relay: Relay) -> None:
    async def refuse(request: AgentRequest) -> None:
        request.agent.conn.reset_stream(request.id, ErrorCode.LOCAL_REFUSED, "connection refused by 127.0.0.1:9")
        request.agent.flush()

    agent = await connect_agent(relay, handler=refuse)
    try:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{relay.port}/", headers={"Host": "demo.localhost"})
        assert r.status_code == 502
        assert "connection refused by 127.0.0.1:9" in r.text
    finally:
        await agent.close()


async def test_dead_agent_is_dropped_by_heartbeat_and_its_name_freed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "devtunnel.relay")
    async with running_relay(ping_interval=0.2, ping_timeout=0.2) as relay:
        agent = await connect_agent(relay, name="sleepy")
        assert relay.tunnels == ["sleepy"]
        agent.ws.transport.pause_reading()  # type: ignore[union-attr]  # stops answering pings
        await async_wait_for(lambda: relay.tunnels == [], timeout=10, what="the dead agent to be dropped")
        [offline] = [r.getMessage() for r in caplog.records if "tunnel sleepy offline" in r.getMessage()]
        assert offline.endswith(": it did not answer a ping within 0.2 s)"), offline
        agent.abort()
        again = await connect_agent(relay, name="sleepy", token="other-token")
        await again.close()
        await agent.close()


async def test_head_and_no_content_responses_have_no_body(relay: Relay) -> None:
    async def answer(request: AgentRequest) -> None:
        if request.event.method == b"HEAD":
            request.respond(200, [(b"Content-Length", b"1234")], end=True)
        elif request.event.target == b"/204":
            request.respond(204, [], end=True)
        else:
            request.respond(304, [(b"Content-Length", b"99"), (b"ETag", b'"v1"')], end=True)

    agent = await connect_agent(relay, handler=answer)
    try:
        async with httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{relay.port}"
            head = await client.head(url + "/", headers={"Host": "demo.localhost"})
            assert (head.status_code, head.headers["content-length"], head.content) == (200, "1234", b"")
            no_content = await client.get(url + "/204", headers={"Host": "demo.localhost"})
            assert (no_content.status_code, no_content.content) == (204, b"")
            not_modified = await client.get(url + "/304", headers={"Host": "demo.localhost"})
            assert (not_modified.status_code, not_modified.headers["etag"], not_modified.content) == (304, '"v1"', b"")
    finally:
        await agent.close()


async def test_expect_100_continue_is_answered_and_body_forwarded(relay: Relay, agent: ScriptedAgent) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"POST /c HTTP/1.1\r\nHost: demo.localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(b"hello")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()
    seen = next(iter(agent.requests.values())).event
    assert (b"Expect", b"100-continue") in seen.headers



async def test_an_http_1_0_client_is_sent_no_100_continue(relay: Relay, agent: ScriptedAgent) -> None:
    # HTTP/1.0 has no 1xx statuses: a server must ignore an HTTP/1.0 request's 100-continue
    # expectation and send it no 1xx (RFC 9110 10.1.1, 15.2), as nginx and h11 do. uvicorn wrote
    # "HTTP/1.1 100 Continue" before the response, which such a client reads as the response.
    response = await raw_exchange(relay.port, b"POST /c HTTP/1.0\r\nHost: demo.localhost\r\nContent-Length: 5\r\n"
                                              b"Expect: 100-continue\r\n\r\nhello")
    assert response.startswith(b"HTTP/1.1 200 "), response
    assert b"100 Continue" not in response
    assert response.endswith(b"body=hello")


@pytest.mark.parametrize("body_later", [False, True], ids=["direct", "asgi-task"])
async def test_an_http_1_0_client_gets_a_body_without_length_ended_by_the_close(body_later: bool) -> None:
    # A response without Content-Length to an HTTP/1.0 client ends when the connection closes:
    # such a client reads no chunked coding (RFC 9112 6.1: a server must not send it
    # Transfer-Encoding), and took "5\r\nhello..." for the body. nginx and h11 answer so; uvicorn
    # chunked it. Both ways through the relay: a request whose body came with its head, one
    # whose body came later (an ASGI task).
    async def stream(request: AgentRequest) -> None:
        await request.body()
        request.respond(200, [(b"Content-Type", b"text/plain")])
        await request.send(b"hello ")
        await request.send(b"world", end=True)

    async with running_relay() as relay:
        agent = await connect_agent(relay, handler=stream)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            head = b"POST /s HTTP/1.0\r\nHost: demo.localhost\r\nContent-Length: 2\r\n\r\n"
            if body_later:
                writer.write(head)
                await async_wait_for(lambda: agent.requests, what="the request at the agent")
                writer.write(b"ok")
            else:
                writer.write(head + b"ok")
            async with asyncio.timeout(10):
                response = await reader.read(-1)
            writer.close()
        finally:
            await agent.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"hello world"


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response with a Content-Length from ``reader``: its head (lowercased) and body."""
    async with asyncio.timeout(10):
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        return head, await reader.readexactly(length)


@pytest.mark.parametrize("body_later", [False, True], ids=["direct", "asgi-task"])
async def test_an_http_1_0_client_asking_for_keep_alive_keeps_its_connection(body_later: bool) -> None:
    # An HTTP/1.0 client sends Connection: keep-alive to keep its connection (ab -k does, for
    # every request): nginx and Go's server keep it and say so (Connection: keep-alive), which
    # such a client needs to hear. The relay closed it after each response, as uvicorn does. A
    # response without a length still closes it (its end is the close), and a request without
    # keep-alive too.
    async def answer(request: AgentRequest) -> None:
        body = await request.body()
        if request.event.target == b"/stream":
            request.respond(200)
            await request.send(b"until ")
            await request.send(b"close", end=True)
            return
        text = request.event.target + b" " + body
        request.respond(200, [(b"Content-Length", str(len(text)).encode()), (b"Connection", b"keep-alive")])
        await request.send(text, end=True)

    async with running_relay() as relay:
        agent = await connect_agent(relay, handler=answer)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            answers = []
            for i, path in enumerate((b"/a", b"/b")):
                head = b"POST %s HTTP/1.0\r\nHost: demo.localhost\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n" % path
                if body_later:
                    writer.write(head)
                    await async_wait_for(lambda: len(agent.requests) > i, what="the request at the agent")
                    writer.write(b"%d!" % i)
                else:
                    writer.write(head + b"%d!" % i)
                answers.append(await read_response(reader))
            writer.write(b"GET /stream HTTP/1.0\r\nHost: demo.localhost\r\nConnection: keep-alive\r\n\r\n")
            async with asyncio.timeout(10):
                streamed = await reader.read(-1)  # ends with the connection
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"POST /c HTTP/1.0\r\nHost: demo.localhost\r\nContent-Length: 2\r\n\r\n2!")
            async with asyncio.timeout(10):
                plain = await reader.read(-1)  # no keep-alive asked: closed after the response
            writer.close()
            # An HTTP/1.0 message with Transfer-Encoding has faulty framing: the connection closes
            # after it (RFC 9112 6.1), and what follows on it is not read as a request.
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"POST /te HTTP/1.0\r\nHost: demo.localhost\r\nConnection: keep-alive\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n2\r\n3!\r\n0\r\n\r\n"
                         b"GET /smuggled HTTP/1.0\r\nHost: demo.localhost\r\nConnection: keep-alive\r\n\r\n")
            async with asyncio.timeout(10):
                chunked = await reader.read(-1)
            writer.close()
        finally:
            await agent.close()
    assert [body for _, body in answers] == [b"/a 0!", b"/b 1!"]
    assert all(b"\r\nconnection: keep-alive\r\n" in head for head, _ in answers), answers
    assert streamed.lower().split(b"\r\n\r\n", 1) == [b"http/1.1 200 ok\r\nconnection: close", b"until close"]
    assert b"\r\nconnection: close\r\n" in plain and plain.endswith(b"/c 2!")
    assert b"\r\nconnection: close\r\n" in chunked and chunked.endswith(b"/te 3!")
    assert b"/smuggled" not in chunked



async def test_too_many_concurrent_streams_get_503() -> None:
    async with running_relay(max_streams=2, client_share=1) as relay:  # one address may fill it
        release = asyncio.Event()

        async def hold(request: AgentRequest) -> None:
            await release.wait()
            request.respond(200, [(b"Content-Length", b"0")], end=True)

        agent = await connect_agent(relay, handler=hold)
        try:
            async with httpx.AsyncClient() as client:
                url = f"http://127.0.0.1:{relay.port}/"
                held = [asyncio.ensure_future(client.get(url, headers={"Host": "demo.localhost"})) for _ in range(2)]
                await async_wait_for(lambda: len(agent.requests) == 2, what="two requests held")
                extra = await client.get(url, headers={"Host": "demo.localhost"})
                assert extra.status_code == 503
                release.set()
                assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        finally:
            await agent.close()


async def test_embedded_relay_routes_a_loopback_host_to_the_only_tunnel() -> None:
    async with running_relay(embedded=True, tokens=()) as relay:
        agent = await connect_agent(relay, name="solo", token="")
        try:
            async with httpx.AsyncClient() as client:
                for host in (f"127.0.0.1:{relay.port}", f"[::1]:{relay.port}", f"solo.localhost:{relay.port}"):
                    r = await client.get(f"http://127.0.0.1:{relay.port}/e", headers={"Host": host})
                    assert r.status_code == 200, host
                    assert r.text.startswith("GET /e")
        finally:
            await agent.close()


async def test_embedded_relay_keeps_status_page_on_bare_domain_and_404s_without_tunnel() -> None:
    async with running_relay(embedded=True, tokens=()) as relay:
        async with httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{relay.port}/"
            r = await client.get(url, headers={"Host": f"127.0.0.1:{relay.port}"})
            assert r.status_code == 404
            assert "no tunnel is online" in r.text
            r = await client.get(url, headers={"Host": f"localhost:{relay.port}"})
            assert r.status_code == 200
            assert "tunnels online: 0" in r.text


async def test_slow_client_on_one_stream_does_not_block_other_requests(relay: Relay) -> None:
    big_sent = asyncio.Event()

    async def answer(request: AgentRequest) -> None:
        if request.event.target == b"/big":
            await request.send_stalling(b"x" * (8 << 20), big_sent)
        else:
            request.respond(200, [(b"Content-Length", b"5")])
            await request.send(b"small", end=True)

    agent = await connect_agent(relay, handler=answer)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(b"GET /big HTTP/1.1\r\nHost: demo.localhost\r\n\r\n")  # and never read the answer
        await writer.drain()
        await asyncio.wait_for(big_sent.wait(), 10)
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{relay.port}/small", headers={"Host": "demo.localhost"})
        assert (r.status_code, r.text) == (200, "small")
    finally:
        writer.close()
        await agent.close()


@pytest.mark.parametrize("answered", [False, True], ids=["before-the-answer", "mid-response"])
async def test_client_leaving_resets_the_stream(relay: Relay, answered: bool) -> None:
    resets: list[StreamReset] = []

    async def handler(request: AgentRequest) -> None:
        if answered:  # an endless event stream
            request.respond(200, [(b"Content-Type", b"text/event-stream")])
            await request.send(b"data: first\n\n")
        event = await request.inbox.get()
        assert isinstance(event, StreamReset)
        resets.append(event)

    agent = await connect_agent(relay, handler=handler)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"GET /wait HTTP/1.1\r\nHost: demo.localhost\r\n\r\n")
        await writer.drain()
        if answered:
            seen = b""
            while b"data: first" not in seen:
                seen += await asyncio.wait_for(reader.read(4096), 10)
            assert b"transfer-encoding: chunked" in seen
        else:
            await async_wait_for(lambda: agent.requests, what="the request to reach the agent")
        writer.close()
        await async_wait_for(lambda: resets, what="the agent to see the reset")
        assert resets[0].code == ErrorCode.CANCEL
        await async_wait_for(lambda: not relay._tunnels["demo"].members[0].streams, what="the relay to forget the stream")
    finally:
        await agent.close()
