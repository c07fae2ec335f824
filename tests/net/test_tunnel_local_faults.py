"""End to end against raw local services: framing we write, odd responses, and failures."""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httptools
import httpx
import pytest

from devtunnel.agent.forward import MAX_HEAD
from tests.net.tunnel_fixtures import (
    Harness,
    RawHandler,
    StrayBodyService,
    parse_response,
    raw_request,
    raw_server,
    read_request_head,
    StreamTasks,
    relay_and_agent,
)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with relay_and_agent(tmp_path) as h:
        yield h


def client_for(harness: Harness, name: str = "app") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=harness.base_url, headers={"Host": harness.host(name)}, timeout=30, trust_env=False)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def request_heads(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """In a raw server's handler: each request head on a kept-alive connection, until it ends."""
    while True:
        try:
            yield await read_request_head(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return


async def report_drop(reader: asyncio.StreamReader, dropped: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
    """In a raw server's handler: read (never answering) until the agent drops the connection,
    by EOF or a reset, then set ``dropped`` in the test's loop."""
    try:
        await reader.read()
    except OSError:
        pass
    loop.call_soon_threadsafe(dropped.set)


async def get_local_error_502(harness: Harness, handler: RawHandler, says: str, *,
                              serving_until: threading.Event | None = None) -> httpx.Response:
    """Serve ``handler`` as the local service and GET / through the tunnel: the answer must be the
    agent's own 502, ``X-Devtunnel-Error: local_error``, its text saying ``says``.

    With ``serving_until`` the service stays up after the answer until that event is set (10 s at
    most), for a handler that reports what became of its connection.
    """
    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            response = await c.get("/")
        assert response.status_code == 502
        assert response.headers["x-devtunnel-error"] == "local_error"
        assert says in response.text
        if serving_until is not None:
            await asyncio.to_thread(serving_until.wait, 10)
    return response


def parse_request(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and de-chunked body of one raw request."""
    headers: list[tuple[bytes, bytes]] = []
    body = bytearray()

    class P:
        def on_header(self, n: bytes, v: bytes) -> None:
            headers.append((n, v))

        def on_body(self, b: bytes) -> None:
            body.extend(b)

    httptools.HttpRequestParser(P()).feed_data(raw)
    return headers, bytes(body)


async def test_body_without_length_goes_to_local_service_chunked(harness: Harness) -> None:
    received = bytearray()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not received.endswith(b"0\r\n\r\n"):
            chunk = await reader.read(65536)
            if not chunk:
                break
            received.extend(chunk)
        writer.write(OK)
        await writer.drain()
        writer.close()

    async def gen() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"\x00\xff" * 1000

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            response = await c.post("/upload", content=gen())
    assert response.text == "ok"
    headers, body = parse_request(bytes(received))
    names = [n.lower() for n, _ in headers]
    assert (b"transfer-encoding", b"chunked") in [(n.lower(), v) for n, v in headers]
    assert b"content-length" not in names
    assert body == b"abc" + b"\x00\xff" * 1000


@pytest.mark.parametrize(("mode", "expected"), [("preserve", "app.localhost:{relay}"), ("rewrite", "127.0.0.1:{local}")])
async def test_host_header_is_preserved_or_rewritten_to_the_target(harness: Harness, mode: str, expected: str) -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_request_head(reader))
        writer.write(OK)
        await writer.drain()
        writer.close()

    with raw_server(handler) as port:
        await harness.start(str(port), host_header=mode)
        async with client_for(harness) as c:
            assert (await c.get("/h", headers={"X-First": "1"})).text == "ok"
    headers, _ = parse_request(heads[0])
    hosts = [v for n, v in headers if n.lower() == b"host"]
    assert hosts == [expected.format(relay=harness.relay.port, local=port).encode()]
    assert heads[0].startswith(b"GET /h HTTP/1.1\r\n")


async def test_interim_1xx_responses_from_local_service_are_skipped(harness: Harness) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nX-Final: yes\r\n\r\ndone")
        await writer.drain()
        writer.close()

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            response = await c.get("/")
    assert (response.status_code, response.text, response.headers["x-final"]) == (201, "done", "yes")
    assert "link" not in response.headers


async def test_body_delimited_by_connection_close_is_forwarded_whole(harness: Harness) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for i in range(3):
            writer.write(b"line %d\n" % i)
            await writer.drain()
        writer.close()

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            response = await c.get("/")
    assert response.text == "line 0\nline 1\nline 2\n"


async def test_local_service_breaking_mid_body_resets_the_stream_and_is_recorded(harness: Harness) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            with pytest.raises(httpx.HTTPError):
                await c.get("/")
    [ex] = await harness.exchanges(1)
    assert ex.error == "local_error"
    assert ex.status == 200 and ex.response is not None and ex.response.body_size == 10


async def test_invalid_http_from_local_service_gets_502(harness: Harness) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.0\r\n\r\n")
        await writer.drain()
        writer.close()

    await get_local_error_502(harness, handler, "invalid HTTP response")


async def test_local_service_too_slow_for_the_head_timeout_gets_504(harness: Harness) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        await reader.read()  # never answers; returns when the agent gives up and closes
        writer.close()

    harness.service.head_timeout = 0.3
    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            response = await c.get("/")
    assert response.status_code == 504
    assert response.headers["x-devtunnel-error"] == "local_timeout"
    [ex] = await harness.exchanges(1)
    assert ex.error == "local_timeout"


async def test_public_client_going_away_closes_the_local_connection(harness: Harness) -> None:
    closed = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        writer.write(b"data: 1\n\n")
        await writer.drain()
        await report_drop(reader, closed, loop)

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            async with c.stream("GET", "/events") as response:
                assert await response.aiter_bytes().__anext__() == b"data: 1\n\n"
        async with asyncio.timeout(10):
            await closed.wait()
    [ex] = await harness.exchanges(1)
    assert ex.error == "client_gone"


async def test_request_without_body_is_retried_when_a_pooled_connection_was_dropped(harness: Harness) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request_head(reader)
        writer.write(OK)  # keep-alive, as far as the agent can tell ...
        await writer.drain()
        head = await read_request_head(reader)
        # Read the body too: closing with bytes unread would reset the connection, which the agent
        # rightly reads as "never seen" and sends again (the test below).
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        writer.close()  # ... but the next request on it is dropped unanswered

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            assert [(await c.get("/")).text for _ in range(3)] == ["ok", "ok", "ok"]
            assert connections == 3
            # A body already handed to the dropped connection cannot be sent again: 502.
            response = await c.post("/", content=b"once")
    assert response.status_code == 502
    assert response.headers["x-devtunnel-error"] == "local_error"


async def test_request_with_body_is_sent_again_when_a_pooled_connection_was_reset_unread(harness: Harness) -> None:
    # A server closing an idle keep-alive connection just as the next request arrives (uvicorn's
    # worker stopping for a --reload) closes it with the request unread: the peer sees a reset.
    bodies: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        async for raw in request_heads(reader):
            headers = dict((n.lower(), v) for n, v in parse_request(raw)[0])
            body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            if connections == 1 and bodies:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()  # a reset, nothing answered
                return
            bodies.append(body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            assert (await c.post("/", content=b"first")).text == "first"
            response = await c.post("/", content=b"webhook")
    assert response.status_code == 200 and response.text == "webhook"
    assert bodies == [b"first", b"webhook"] and connections == 2
    exchanges = await harness.exchanges(2)
    assert [(ex.status, ex.request.body) for ex in exchanges] == [(200, b"first"), (200, b"webhook")]


async def test_head_timeout_starts_after_a_slow_upload_ends(harness: Harness) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        await reader.readuntil(b"0\r\n\r\n")  # the whole chunked body, however long it takes
        writer.write(OK)
        await writer.drain()
        writer.close()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.sleep(0.6)  # the public client pauses for twice the head timeout
        yield b"last"

    harness.service.head_timeout = 0.3
    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            response = await c.post("/upload", content=slow_body())
    assert response.status_code == 200


async def test_early_response_before_the_body_is_read_ends_the_upload(harness: Harness) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
        await writer.drain()
        # A lingering close, as nginx does: closing with unread bytes would send a reset that
        # can destroy the response before the agent reads it.
        writer.write_eof()
        while await reader.read(1 << 16):
            pass
        writer.close()

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            response = await c.post("/upload", content=b"x" * (8 << 20))
            assert (response.status_code, response.text) == (413, "too big!")
            # The tunnel goes on serving.
            assert (await c.post("/upload", content=b"small")).status_code == 413
    exchanges = await harness.exchanges(2)
    assert all(ex.status == 413 for ex in exchanges)


async def test_http_1_0_static_file_server_works_through_the_tunnel(harness: Harness, tmp_path: Path) -> None:
    import functools
    import http.server

    from tests.kit.servers import http_server

    (tmp_path / "www").mkdir()
    payload = bytes(range(256)) * 4000
    (tmp_path / "www" / "file.bin").write_bytes(payload)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    with http_server(handler=functools.partial(Quiet, directory=str(tmp_path / "www"))) as server:
        await harness.start(str(server.port))
        async with client_for(harness) as c:
            got = await c.get("/file.bin")
            head = await c.head("/file.bin")
            listing = await c.get("/")
            missing = await c.get("/nope")
    assert got.status_code == 200 and got.content == payload
    assert head.status_code == 200 and head.headers["content-length"] == str(len(payload)) and head.content == b""
    assert listing.status_code == 200 and b"file.bin" in listing.content
    assert missing.status_code == 404


async def test_request_body_is_recorded_when_the_local_service_refuses(harness: Harness) -> None:
    # A webhook sent while the local service is down is exactly the one worth replaying later.
    from tests.helpers import free_port

    await harness.start(str(free_port()))
    payload = b'{"type": "invoice.paid", "id": "evt_1"}'
    async with client_for(harness) as c:
        response = await c.post("/webhooks", content=payload, headers={"Content-Type": "application/json"})
    assert response.status_code == 502
    [ex] = await harness.exchanges(1)
    assert ex.error == "local_refused"
    assert ex.request.body == payload
    assert ex.request.body_size == len(payload)


async def test_request_body_is_recorded_when_the_local_service_answers_without_reading_it(harness: Harness) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.0 501 Unsupported method\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n")
        await writer.drain()
        writer.close()

    payload = b"x" * 5000 + b"\x00\xff"
    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            response = await c.post("/webhooks", content=payload)
    assert response.status_code == 501
    [ex] = await harness.exchanges(1)
    assert ex.request.body == payload


async def test_request_body_a_kept_alive_service_answered_before_is_recorded_as_partial(harness: Harness) -> None:
    # A webhook receiver that 404s a wrong path (or 401s from a middleware) answers from the
    # head alone and keeps the connection; the relay then stops sending the body. What came of
    # it was recorded as the whole body: a verdict on an empty delivery, a replay sending none.
    answered = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nNot Found")
        await writer.drain()
        loop.call_soon_threadsafe(answered.set)
        await reader.read()

    payload = b'{"type": "user.created", "id": "evt_1"}'

    async def late_body() -> AsyncIterator[bytes]:
        await asyncio.wait_for(answered.wait(), 10)  # the body leaves once the answer was written
        yield payload

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            response = await c.post("/webhooks", content=late_body(),
                                    headers={"Content-Length": str(len(payload))})
    assert response.status_code == 404
    [ex] = await harness.exchanges(1)
    assert payload.startswith(ex.request.body)
    assert (ex.request.body_size, ex.request.body_truncated) == (len(payload), True)


async def test_kept_alive_connection_that_goes_silent_gets_504_after_the_head_timeout(harness: Harness) -> None:
    # The second request goes out on the kept-alive connection, where a whole response is
    # answered from the connection's callback: the head timeout must still apply there.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(OK)
        await writer.drain()
        await read_request_head(reader)
        await reader.read()  # never answers the second one
        writer.close()

    harness.service.head_timeout = 0.3
    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            first = await c.get("/first")
            second = await c.get("/second")
    assert (first.status_code, first.text) == (200, "ok")
    assert second.status_code == 504 and second.headers["x-devtunnel-error"] == "local_timeout"


async def test_kept_alive_responses_whole_or_in_pieces_all_arrive_intact(harness: Harness) -> None:
    body = b"\x00\xff" * 5000

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for head in request_heads(reader):
            if b"/pieces" in head:  # the head, then the body in two writes later on
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(body[:100])
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(body[100:])
            elif b"/split" in head:  # head and body in two writes, back to back (as nginx does)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                await writer.drain()
                writer.write(body)
            elif b"/empty" in head:
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: 1\r\nX-A: 2\r\n\r\n" % len(body) + body)
            await writer.drain()
        writer.close()

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            results = [await c.get(path) for path in ("/warm", "/whole", "/pieces", "/empty", "/split", "/whole")]
    assert [r.status_code for r in results] == [200, 200, 200, 204, 200, 200]
    assert all(r.content == body for r in results if r.status_code == 200)
    assert results[1].headers.get_list("x-a") == ["1", "2"]
    exchanges = {ex.request.target: ex for ex in await harness.exchanges(6)}
    assert exchanges[b"/pieces"].response is not None and exchanges[b"/pieces"].response.body == body
    assert exchanges[b"/whole"].status == 200 and exchanges[b"/whole"].ttfb is not None
    assert exchanges[b"/empty"].status == 204


async def test_kept_alive_responses_a_callback_cannot_finish_go_to_the_streams_task(harness: Harness) -> None:
    # On a kept-alive connection a request without a body is answered from the connection's
    # callback when its whole response arrives; a long response, one delimited by the end of
    # the connection, or invalid HTTP is handed to a task, which must see every byte.
    large = bytes(range(256)) * 1024  # 256 KiB, more than a callback keeps

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for head in request_heads(reader):
            if b"/large" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(large) + large)
            elif b"/until-close" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + large)
                await writer.drain()
                break
            elif b"/invalid" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nBad Header\r\n\r\nok")
                await writer.drain()
                break
            else:
                writer.write(OK)
            await writer.drain()
        writer.close()

    spawned: list[bytes] = []
    paths = ("/warm", "/quick", "/large", "/quick", "/until-close", "/warm", "/invalid", "/warm", "/quick")
    results = []
    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            with StreamTasks() as tasks:
                for path in paths:
                    before = tasks.count
                    results.append(await c.get(path))
                    if tasks.count > before:
                        spawned.append(path.encode())
    assert [r.status_code for r in results] == [200, 200, 200, 200, 200, 200, 502, 200, 200]
    assert results[2].content == large and results[4].content == large
    assert results[6].headers["x-devtunnel-error"] == "local_error"
    # New connections (after /until-close and /invalid closed theirs) and hand-overs take a task.
    assert spawned == [b"/warm", b"/large", b"/until-close", b"/warm", b"/invalid", b"/warm"]
    exchanges = {ex.request.target: ex for ex in await harness.exchanges(len(paths))}
    assert exchanges[b"/large"].response is not None and exchanges[b"/large"].response.body == large


async def test_public_client_going_away_closes_a_kept_alive_local_connection(harness: Harness) -> None:
    closed = asyncio.Event()
    second_asked = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(OK)
        await writer.drain()
        await read_request_head(reader)
        loop.call_soon_threadsafe(second_asked.set)
        await report_drop(reader, closed, loop)

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            assert (await c.get("/first")).text == "ok"
            waiting = asyncio.ensure_future(c.get("/second"))
            async with asyncio.timeout(10):
                await second_asked.wait()
            waiting.cancel()  # the public client gives up
            with pytest.raises(asyncio.CancelledError):
                await waiting
        async with asyncio.timeout(10):
            await closed.wait()
    exchanges = {ex.request.target: ex for ex in await harness.exchanges(2)}
    assert exchanges[b"/second"].error == "client_gone"
    assert exchanges[b"/second"].error_message == "the public client went away before the response ended"


# -- streamed responses on a kept-alive local connection -----------------------------------------------
def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
PART = bytes(range(256)) * 4
# Each response as the local service writes it: (bytes written, body bytes they carry). Every
# write after the first waits until the test saw the public client receive the one before.
STREAMED: dict[str, list[tuple[bytes, bytes]]] = {
    "events": [(SSE_HEAD + chunk(b"data: first\n\n"), b"data: first\n\n"),
               (chunk(b"data: second\n\n"), b"data: second\n\n"), (b"0\r\n\r\n", b"")],
    "download": [(CHUNKED_HEAD, b""), (chunk(PART), PART), (chunk(PART[::-1]) + b"0\r\n\r\n", PART[::-1])],
    "poll": [(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", b""), (b"changed", b"changed")],
    "tokens": [(SSE_HEAD, b""), (chunk(b"data: Hel"), b"data: Hel"), (chunk(b"lo\n\n"), b"lo\n\n"),
               (b"0\r\n\r\n", b"")],
}


async def test_streamed_responses_on_a_kept_alive_connection_reach_the_client_as_they_are_written(harness: Harness) -> None:
    # The same local connection serves every request: after the first, a request without a
    # body is answered from the connection's callback, which must not hold a response back
    # until it is whole. The service writes the next part only once the test saw the public
    # client receive the last one, so a held-back part can never arrive (the read times out).
    connections: list[int] = []
    released: dict[tuple[str, int], threading.Event] = {}
    # A response answered whole from the callback leaves its parser for the next one there
    # (LocalResponse.again): /events?n=1, /download and /tokens each follow one.
    paths = ["/warm", "/whole?1", "/events?n=1", "/whole?2", "/download", "/events?n=2", "/poll", "/tokens", "/whole"]
    for path in paths:
        kind = path[1:].split("?")[0]
        for step in range(1, len(STREAMED.get(kind, ()))):
            released[path, step] = threading.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        async for head in request_heads(reader):
            path = head.split(b" ")[1].decode()
            kind = path[1:].split("?")[0]
            if kind not in STREAMED:
                writer.write(OK)
            for step, (data, _) in enumerate(STREAMED.get(kind, ())):
                if step and not await asyncio.to_thread(released[path, step].wait, 15):
                    writer.transport.abort()  # never sent late: the test fails on its own deadline
                    return
                writer.write(data)
                await writer.drain()
        writer.close()

    spawned: list[bytes] = []
    bodies: dict[str, bytes] = {}
    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            with StreamTasks() as tasks:
                for path in paths:
                    before = tasks.count
                    steps = STREAMED.get(path[1:].split("?")[0], [(OK, b"ok")])
                    async with asyncio.timeout(10):
                        async with c.stream("GET", path) as response:
                            assert response.status_code == 200
                            parts = response.aiter_raw()
                            got = b""
                            for step in range(1, len(steps)):
                                wanted = b"".join(body for _, body in steps[:step])
                                while len(got) < len(wanted):
                                    got += await anext(parts)
                                assert got == wanted, path
                                released[path, step].set()
                            got += b"".join([part async for part in parts])
                    bodies[path] = got
                    if tasks.count > before:
                        spawned.append(path.encode())
    assert connections == [1]
    # A body that comes whole in one read after its head still needs no task; one that
    # keeps coming is carried on by the stream's task.
    assert spawned == [b"/warm", b"/events?n=1", b"/download", b"/events?n=2", b"/tokens"]
    for path in paths:
        assert bodies[path] == b"".join(body for _, body in STREAMED.get(path[1:].split("?")[0], [(OK, b"ok")])), path
    recorded = {ex.request.target.decode(): ex for ex in await harness.exchanges(len(paths))}
    for path in paths:
        ex = recorded[path]
        assert ex.error is None and ex.response is not None and ex.response.body == bodies[path], path


@pytest.mark.parametrize("fault", ["invalid-chunk", "closed-mid-body"])
async def test_local_service_failing_after_a_streamed_head_on_a_kept_alive_connection_is_recorded(
    harness: Harness, fault: str
) -> None:
    # The head was sent on from the connection's callback; what goes wrong afterwards must
    # still cut the public response and be recorded, as on a fresh connection.
    released = threading.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(OK)
        await writer.drain()
        await read_request_head(reader)
        if fault == "invalid-chunk":
            writer.write(CHUNKED_HEAD)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        await writer.drain()
        if not await asyncio.to_thread(released.wait, 15):
            writer.transport.abort()
            return
        if fault == "invalid-chunk":
            writer.write(b"zz\r\nbad\r\n")
            await writer.drain()
            await reader.read()
        writer.close()

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            assert (await c.get("/first")).text == "ok"
            async with asyncio.timeout(10):
                async with c.stream("GET", "/second") as response:
                    assert response.status_code == 200
                    released.set()
                    with pytest.raises(httpx.HTTPError):
                        await response.aread()
    exchanges = {ex.request.target: ex for ex in await harness.exchanges(2)}
    second = exchanges[b"/second"]
    assert second.error == "local_error" and second.status == 200
    expected = "invalid HTTP response" if fault == "invalid-chunk" else "in the middle of the response body"
    assert expected in (second.error_message or "")


async def test_public_client_leaving_a_stream_on_a_kept_alive_connection_closes_it(harness: Harness) -> None:
    closed = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(OK)
        await writer.drain()
        await read_request_head(reader)
        writer.write(SSE_HEAD)  # the head alone: the callback sends it on and keeps listening
        await writer.drain()
        await report_drop(reader, closed, loop)

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            assert (await c.get("/first")).text == "ok"
            async with asyncio.timeout(10):
                async with c.stream("GET", "/events") as response:
                    assert response.headers["content-type"] == "text/event-stream"
        async with asyncio.timeout(10):
            await closed.wait()
    exchanges = {ex.request.target: ex for ex in await harness.exchanges(2)}
    assert exchanges[b"/events"].error == "client_gone"


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="Linux only")
@pytest.mark.parametrize("parts", [2, 3], ids=["head-then-body", "head-body-in-two-writes"])
async def test_service_writing_a_response_in_pieces_without_nodelay_is_not_held_by_delayed_acks(
    harness: Harness, parts: int
) -> None:
    """A development server (http.server, Werkzeug) writes head and body in separate sends with
    Nagle on: its second send waits for our ACK of the first. A delayed ACK costs 40 ms a request
    on a kept-alive connection; the agent acknowledges at once whatever leaves a response unfinished."""
    body = b"x" * 200
    pieces = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)]
    pieces += [body[:100], body[100:]] if parts == 3 else [body]
    pieces = [pieces[0] + pieces[1], pieces[2]] if parts == 3 else pieces  # head and a first part, then the rest
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)  # Nagle on
        async for _ in request_heads(reader):
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
        writer.close()

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            times = []
            for _ in range(15):
                t0 = time.perf_counter()
                response = await c.get("/piece")
                times.append(time.perf_counter() - t0)
                assert response.content == body
    assert connections == 1  # every request went over the one kept-alive local connection
    # Once the kernel sees the request-response rhythm (the first few requests), a delayed ACK
    # holds the last piece of every response for at least 40 ms (Linux's minimum ACK delay): then
    # no request takes less. Answered at once, a request takes a few ms, so the fastest of the
    # later ones is well under that even on a machine busy enough to slow most of them.
    assert min(times[4:]) < 0.035, times


async def test_each_request_on_a_kept_alive_connection_gets_its_own_head_timeout(harness: Harness) -> None:
    # The first answer takes 0.3 s of a 0.5 s head timeout; the second request, on the same
    # connection, never gets one: it must time out 0.5 s after it went out, not when the first
    # request's time would have run out.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        await asyncio.sleep(0.3)  # the service is slow, not the test waiting
        writer.write(OK)
        await writer.drain()
        await read_request_head(reader)
        await reader.read()  # never answers the second one
        writer.close()

    harness.service.head_timeout = 0.5
    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            first = await c.get("/first")
            sent = time.monotonic()
            second = await c.get("/second")
            waited = time.monotonic() - sent
    assert (first.status_code, first.text) == (200, "ok")
    assert second.status_code == 504 and second.headers["x-devtunnel-error"] == "local_timeout"
    assert 0.45 <= waited < 5, waited



@pytest.mark.parametrize(("start", "piece"), [
    (b"HTTP/1.1 200 OK\r\n", b"X-Pad: " + b"a" * 100 + b"\r\n"),  # header lines that never end the head
    (b"HTTP/1.1 200 ", b"a" * 100),  # a reason phrase that never ends
    (b"HTTP/1.1 200 OK\r\nX-A: ", b"a" * 100),  # one header value that never ends
    (b"", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),  # interim responses, never a final one
], ids=["header-lines", "reason", "header-value", "interim-storm"])
async def test_a_response_head_that_never_ends_gets_502_and_the_agent_stops_reading_it(
    harness: Harness, start: bytes, piece: bytes
) -> None:
    # A service writing its head for ever (here: up to 64 MB). httptools sets no bound, and the
    # agent held every byte until the head timeout (60 s; 200 MB of header lines: 460 MB more in
    # the agent). It answers 502 once the head passes MAX_HEAD and closes the connection: the
    # service cannot write the rest.
    written = 0
    cut = threading.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await read_request_head(reader)
        chunk = piece * (60_000 // len(piece))
        writer.write(start)
        try:
            while written < 64 << 20:
                writer.write(chunk)
                await writer.drain()
                written += len(chunk)
        except ConnectionError:
            cut.set()
        writer.close()

    await get_local_error_502(harness, handler, "without ending its response head", serving_until=cut)
    assert cut.is_set(), f"the service wrote {written} bytes of head without the agent closing the connection"
    assert written < 16 << 20


async def test_a_large_response_head_within_max_head_passes(harness: Harness) -> None:
    # Up to MAX_HEAD a head is the local service's business: 150 KiB of header lines, written in
    # pieces (the quick path hands such a head to the stream's task, which reads it whole).
    lines = [b"X-Pad-%d: %s\r\n" % (i, b"a" * 100) for i in range(1400)]
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + b"".join(lines) + b"\r\n"
    assert 128 << 10 < len(head) < MAX_HEAD

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        for start in range(0, len(head), 16_000):
            writer.write(head[start : start + 16_000])
            await writer.drain()
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    with raw_server(handler) as port:
        await harness.start(str(port))
        raw = await raw_request(harness.relay.port, b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                                % harness.host("app").encode())
    status, headers, body = parse_response(raw)  # httpx refuses a head this large
    assert (status, body) == (200, b"ok")
    assert (b"x-pad-1399", b"a" * 100) in [(n.lower(), v) for n, v in headers]


@pytest.mark.parametrize("pieces", [1, 40], ids=["one-write", "in-pieces"])
async def test_a_whole_response_head_past_max_head_gets_502_not_a_traceback(harness: Harness, pieces: int) -> None:
    # The bound on an unfinished head counted only reads that left it unfinished: a head past
    # MAX_HEAD that came whole in one read reached the wire encoder, which refused it (a
    # ProtocolError traceback in the agent, a bare 502 "internal error in the agent").
    lines = [b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(300)]
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + b"".join(lines) + b"\r\n"
    assert len(head) > MAX_HEAD
    step = -(-len(head) // pieces)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        for start in range(0, len(head), step):
            writer.write(head[start : start + step])
        writer.write(b"ok")
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    await get_local_error_502(harness, handler, "response head")
    (ex,) = await harness.exchanges(1)
    assert ex.error == "local_error" and "KiB" in (ex.error_message or ""), ex.error_message


@pytest.mark.parametrize(("first", "expected"), [
    (b"HTTP/1.1 204 No Content\r\n\r\n", (204, b"")),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", (200, b"ok")),
])
async def test_a_response_followed_by_another_in_the_same_write_reaches_the_client_alone(
    harness: Harness, first: bytes, expected: tuple[int, bytes]
) -> None:
    # A service (or a proxy in front of one) writes a second response behind the first. The
    # agent used to parse it into the first: a 204 reached the client as "200 EVIL", a 200 "ok"
    # as a head and body that disagree (the client saw the connection drop). The client gets
    # the first response; the connection is not used again, so the next request is not answered
    # with the queued one either.
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first_connection = connections == 1
        async for _ in request_heads(reader):
            if first_connection:
                writer.write(first + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
                first_connection = False
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
            await writer.drain()
        writer.close()

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            response = await c.get("/first")
            after = await c.get("/second")
    assert (response.status_code, response.content) == expected
    assert (after.status_code, after.content) == (200, b"good")


@pytest.mark.parametrize(("status", "framing", "body"), [
    (b"204 No Content", b"Content-Length: 5", b"hello"),
    (b"304 Not Modified", b"Transfer-Encoding: chunked", b"0\r\n\r\n"),
    (b"204 No Content", b"Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n"),
])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_body_a_no_content_answer_announces_is_dropped_with_its_connection(
    harness: Harness, status: bytes, framing: bytes, body: bytes, method: str
) -> None:
    # A 204 or 304 has no body (RFC 9112 6.3), whatever its head says: the client gets the
    # status alone, as from nginx or h11 (a 304 with a Content-Length alone: see below). A service that announces one anyway often writes it
    # after the head (http.server writes the head, then the body): it came at the front of the
    # next response on the kept-alive connection, and the next request got the agent's 502
    # ("invalid HTTP response"). Here it comes exactly then, if the connection is used again.
    # curl sends "data" with every POST
    service = StrayBodyService(b"/nothing", b"HTTP/1.1 " + status + b"\r\n" + framing + b"\r\n\r\n", body,
                               request_body=4 if method == "POST" else 0)
    with raw_server(service) as port:
        await harness.start(str(port))
        url = harness.base_url
        # curl keeps its connection to the relay; the first request opens the agent's local
        # connection, the next ones find it in the pool (GETs are answered from its callbacks,
        # POSTs with their bodies in the streams' tasks).
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-i", "--max-time", "20", "-H", f"Host: {harness.host('app')}",
            f"{url}/first", *(["-X", "POST", "-d", "data"] if method == "POST" else []), f"{url}/nothing", f"{url}/after",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
    code = status.split()[0]
    assert out.count(b"HTTP/1.1 ") == 3, out
    first, nothing, after = out.split(b"HTTP/1.1 ")[1:]
    assert first.endswith(b"\r\n\r\nnext") and after.startswith(b"200 OK") and after.endswith(b"\r\n\r\nnext"), out
    assert nothing.startswith(code) and nothing.endswith(b"\r\n\r\n") and b"hello" not in nothing, out
    recorded = {ex.request.target: ex for ex in await harness.exchanges(3)}
    ex = recorded[b"/nothing"]
    assert ex.status == int(code) and ex.error is None and ex.response is not None
    assert ex.response.body == b"" and ex.response.body_size == 0
    assert ex.response.headers.fields[-1] == tuple(framing.split(b": ")), "the head as the service sent it"
    assert recorded[b"/after"].status == 200 and recorded[b"/after"].error is None


TRAILED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n")
TRAILER = b"0\r\nX-Checksum: abc123\r\nSet-Cookie: sid=evil\r\nLocation: http://elsewhere.example/\r\n\r\n"


@pytest.mark.parametrize("late", [False, True], ids=["same-write", "later-write"])
async def test_trailer_fields_of_a_response_never_become_its_headers(harness: Harness, late: bool) -> None:
    # A chunked response's trailer fields are not headers (RFC 9110 6.5.1: never merged into
    # the header section). The agent parsed them into the headers when they came in the same
    # read as the head (a Set-Cookie or Location the service put after the body reached the
    # client as a header) and dropped them when they came later: what the client saw depended
    # on how the bytes were cut. They are dropped either way, as nginx drops an upstream's;
    # the tunnel carries no trailers. Both paths: a kept-alive connection's callback (the
    # second request) and the stream's task (the first, on a new connection).
    head_seen = threading.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for _ in request_heads(reader):
            if late:
                writer.write(TRAILED)
                await writer.drain()
                await asyncio.get_running_loop().run_in_executor(None, head_seen.wait, 10)
                head_seen.clear()
                writer.write(TRAILER)
            else:
                writer.write(TRAILED + TRAILER)
            await writer.drain()
        writer.close()

    results = []
    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            for path in ("/first", "/second"):
                async with c.stream("GET", path) as response:
                    head_seen.set()
                    await response.aread()
                    results.append(response)
    for response in results:
        assert (response.status_code, response.content) == (200, b"hello world")
        assert not {"x-checksum", "set-cookie", "location"} & set(response.headers), response.headers
    for ex in await harness.exchanges(2):
        assert ex.response is not None
        assert not {b"x-checksum", b"set-cookie", b"location"} & {n.lower() for n, _ in ex.response.headers.fields}


async def test_a_response_head_with_bare_lf_line_ends_passes_as_it_does_to_curl(harness: Harness) -> None:
    # `printf 'HTTP/1.1 200 OK\n\nhi' | nc -l 8080`, a hand-written mock or a device's firmware:
    # line ends without CR, which RFC 9112 2.2 lets a recipient take, and which curl, browsers and
    # nginx in front of such a service take. The agent's strict parser answered 502 ("Missing
    # expected CR after response line"). Kept-alive (the callback's quick path after the first
    # request's task) and ended by the close alike.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for head in request_heads(reader):
            if b"/nc" in head:
                writer.write(b"HTTP/1.0 200 OK\nContent-Type: text/plain\n\nhello from nc\n")
                await writer.drain()
                break
            writer.write(b"HTTP/1.1 200 OK\nContent-Length: 2\nX-Line: lf\r\n\nok")
            await writer.drain()
        writer.close()

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            results = [await c.get(path) for path in ("/kept", "/kept", "/nc")]
    assert [(r.status_code, r.content) for r in results] == [(200, b"ok"), (200, b"ok"), (200, b"hello from nc\n")]
    assert [r.headers.get("x-line") for r in results[:2]] == ["lf", "lf"]
    assert results[2].headers["content-type"] == "text/plain"


async def test_head_requests_keep_the_local_connection_alive(harness: Harness) -> None:
    # A response to HEAD ends with its head, whatever length it declares. The agent closed the
    # local connection after every one (llhttp cannot be told the request was HEAD, and it could
    # not tell whether bytes followed the head), so a monitor's HEAD every few seconds, or a link
    # checker, cost the service a connection each where a client talking to it directly keeps
    # one. Now a head that ends the bytes read keeps the connection for the next request, on the
    # stream's task (the first request) and on the callback's quick path alike; one followed by
    # bytes (a body sent to HEAD) still closes it.
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        async for head in request_heads(reader):
            if head.startswith(b"HEAD /chunked"):
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            elif head.startswith(b"HEAD /interim"):
                writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
            elif head.startswith(b"HEAD /with-body"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            elif head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Head: yes\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nconnection %d" % (
                    len(b"connection %d" % connections), connections))
            await writer.drain()
        writer.close()

    with raw_server(handler) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            heads = [await c.head(path) for path in ("/a", "/b", "/chunked", "/interim")]
            after = await c.get("/next")
            with_body = await c.head("/with-body")
            last = await c.get("/last")
    assert [(r.status_code, r.content) for r in heads] == [(200, b"")] * 4
    assert heads[0].headers["content-length"] == "1234" and heads[1].headers["x-head"] == "yes"
    assert heads[3].headers["content-length"] == "9"
    assert after.text == "connection 1"
    assert (with_body.status_code, with_body.content) == (200, b"")
    assert last.text == "connection 2"  # the body sent to HEAD was not read as this response


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("stray", [b"", b"hello"], ids=["no body", "a body written after the head"])
async def test_a_304_with_a_content_length_keeps_its_local_connection(harness: Harness, method: str, stray: bytes) -> None:
    # A 304's Content-Length is the length the 200 would have had (RFC 9110 8.6): no body
    # follows, and the connection is used again, as after a 304 without one (nginx does the
    # same). The agent used to close it, so every revalidation cost the service a new
    # connection. A service that writes those bytes anyway, in a write of its own, has them
    # dropped (up to the length it announced) wherever they fall: while the connection is idle
    # or at the front of the next response.
    service = StrayBodyService(b"/same", b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 5\r\n\r\n',
                               stray, request_body=4 if method == "POST" else 0)
    with raw_server(service) as port:
        await harness.start(str(port))
        async with client_for(harness) as c:
            send = functools.partial(c.request, method, content=b"data" if method == "POST" else None)
            answers = [await send("/first"), await send("/same", headers={"If-None-Match": '"v1"'}), await send("/after")]
    assert [(a.status_code, a.content) for a in answers] == [(200, b"next"), (304, b""), (200, b"next")]
    assert answers[1].headers["content-length"] == "5"
    assert service.connections == 1, "the 304 closed the local connection"
    recorded = {ex.request.target: ex for ex in await harness.exchanges(3)}
    assert recorded[b"/same"].status == 304 and recorded[b"/same"].error is None
    assert recorded[b"/after"].status == 200 and recorded[b"/after"].error is None
