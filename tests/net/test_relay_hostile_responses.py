"""What a public client gets when the agent (holding a valid token) answers with a head or body
no HTTP/1.1 response may carry: the relay's 502 page stating it, or, once the head is out, a
connection closed at once; never the bytes as the agent sent them. Real relay on loopback, a
scripted agent, raw-socket clients; both ways of writing a response (the direct path and the
ASGI task path)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import h11
import pytest

from devtunnel.protocol.connection import ErrorCode
from devtunnel.relay.server import Relay
from tests.net._relay_agent import AgentRequest, ScriptedAgent, connect_agent, running_relay, task_path_spied

HOST = b"Host: demo.localhost\r\n"
ESCAPES = "\x1b[2J\x1b]0;RELAYPWN\x07\x1b[31m"


@pytest.fixture(params=["direct", "task"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test runs on the direct path and, with it turned off, on the ASGI task path."""
    with task_path_spied(direct=request.param == "direct") as tasks:
        yield request.param
    assert bool(tasks) == (request.param == "task"), "the response went another way than the test meant"


@pytest.fixture
async def relay(path: str) -> AsyncIterator[Relay]:
    async with running_relay() as r:
        yield r


async def _read_all(relay: Relay, request: bytes) -> bytes:
    """Send ``request`` on a new connection; what the relay writes until the end of its first
    response (as a strict HTTP/1.1 client reads it: h11), or until it closes (5 s at most)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(request)
    data = b""
    client = _client()
    try:
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                data += chunk
                client.receive_data(chunk)
                while (event := client.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                    if isinstance(event, h11.EndOfMessage):
                        return data
    finally:
        writer.close()
    return data


def _client() -> h11.Connection:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "demo.localhost")]))
    client.send(h11.EndOfMessage())
    return client


def _response(data: bytes) -> tuple[h11.Response, bytes]:
    """The one response ``data`` holds, read by a strict HTTP/1.1 client (h11): its head and
    body, all of it valid and nothing after it."""
    client = _client()
    client.receive_data(data)
    head = client.next_event()
    assert isinstance(head, h11.Response), (head, data)
    body = b""
    while isinstance(event := client.next_event(), h11.Data):
        body += event.data
    assert isinstance(event, h11.EndOfMessage), (event, data)
    assert data.endswith(b"\r\n\r\n" + body), "bytes after the response"
    return head, body


async def _agent(relay: Relay, answer: dict[bytes, tuple[int, list[tuple[bytes, bytes]], bytes]]) -> ScriptedAgent:
    """An agent answering each target of ``answer`` with its status, headers and whole body."""

    async def handler(request: AgentRequest) -> None:
        status, headers, body = answer[request.event.target]
        request.respond(status, headers, end=not body)
        if body:
            await request.send(body, end=True)

    return await connect_agent(relay, handler=handler)


@pytest.mark.parametrize(
    ("name", "shown"),
    [(b"", "''"), (b"x-\xff", "'x-\ufffd'"), (b"x-\xc3\xa9", "'x-\xe9'")],
    ids=["empty", "high-byte", "utf-8"],
)
async def test_a_header_name_that_is_not_a_token_gets_the_client_a_502(
    relay: Relay, name: bytes, shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    agent = await _agent(relay, {b"/": (200, [(b"Content-Length", b"2"), (name, b"1")], b"hi")})
    try:
        got = await _read_all(relay, b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    finally:
        await agent.close()
    head, body = _response(got)
    assert head.status_code == 502 and (b"connection", b"close") in head.headers
    assert body.decode() == f"tunnel demo answered with an invalid header: the header name {shown} is not a token\n"
    sent_head = got.split(b"\r\n\r\n", 1)[0]
    assert b"\r\n: " not in sent_head and b"x-\xff" not in sent_head and b"x-\xc3" not in sent_head, got
    assert "is not valid HTTP" in caplog.text


@pytest.mark.parametrize(
    ("status", "headers", "body", "problem"),
    [
        (200, [(b"Content-Length", b"2")], b"hello world, smuggled", "a body longer than its Content-Length"),
        (200, [(b"Content-Length", b"100")], b"hi", "a body shorter than its Content-Length"),
        (204, [], b"bodybody", "a body in a 204 response, which has none"),
        (304, [(b"Content-Length", b"8")], b"bodybody", "a body in a 304 response, which has none"),
        (200, [(b"Content-Length", b"99999999999999999999999")], b"hi", "a Content-Length of more than 18 digits"),
        (200, [(b"Content-Length", b"1" + b"0" * 18)], b"BODY", "a Content-Length of more than 18 digits"),
        (200, [(b"Content-Length", b"0" * 19)], b"BODY", "a Content-Length of more than 18 digits"),
    ],
    ids=["longer", "shorter", "204", "304", "huge", "10^18", "19-zeros"],
)
async def test_a_body_that_does_not_fit_its_head_gets_the_client_a_502(
    relay: Relay, status: int, headers: list[tuple[bytes, bytes]], body: bytes, problem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    agent = await _agent(relay, {b"/": (status, headers, body)})
    try:
        got = await _read_all(relay, b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    finally:
        await agent.close()
    head, text = _response(got)
    assert (head.status_code, text.decode()) == (502, f"tunnel demo answered with {problem}\n")
    assert body not in got and b"99999" not in got and b"0" * 18 not in got
    if "digits" not in problem:  # (a head refused as it came is not logged: nothing was begun)
        assert "is not valid HTTP: " + problem in caplog.text


async def test_a_body_running_past_its_length_once_the_head_is_out_closes_the_connection_at_once(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    more = asyncio.Event()

    async def handler(request: AgentRequest) -> None:
        request.respond(200, [(b"Content-Length", b"5")])
        await request.send(b"abc")
        await more.wait()
        await request.send(b"defghijk", end=True)

    agent = await connect_agent(relay, handler=handler)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 5\r\n" in head.lower(), head
            assert await reader.readexactly(3) == b"abc"
            more.set()
            rest = b""
            try:
                while chunk := await reader.read(65536):
                    rest += chunk
            except ConnectionResetError:
                pass
        writer.close()
        assert rest in (b"", b"de"), rest  # never the bytes past the length
    finally:
        await agent.close()
    assert "Response content longer than Content-Length" in caplog.text


@pytest.mark.parametrize(
    ("code", "status", "start"),
    [(ErrorCode.LOCAL_ERROR, 502, "tunnel demo could not answer: "), (ErrorCode.TOO_LARGE, 413, ""),
     (ErrorCode.REFUSED_STREAM, 503, "tunnel demo is busy: ")],
    ids=["reset", "too-large", "refused"],
)
async def test_the_agents_reset_reason_reaches_the_clients_page_escaped_and_cut(
    relay: Relay, code: ErrorCode, status: int, start: str
) -> None:
    reason = ESCAPES + "<script>alert(1)</script>\r\nX: 1" + "x" * 5000

    async def handler(request: AgentRequest) -> None:
        request.agent.conn.reset_stream(request.id, code, reason)
        request.agent.flush()

    agent = await connect_agent(relay, handler=handler)
    try:
        got = await _read_all(relay, b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
    finally:
        await agent.close()
    head, body = _response(got)
    assert head.status_code == status
    assert b"\x1b" not in got and b"\x07" not in got and b"\nX: 1" not in got
    text = body.decode()
    assert text.startswith(start + "\\x1b[2J\\x1b]0;RELAYPWN\\x07\\x1b[31m<script>alert(1)</script>\\r\\nX: 1xxx"), text
    assert text.endswith(f"… ({len(reason) - 200} more characters)\n") and len(text) < 350, text


async def test_well_formed_responses_pass_byte_for_byte_on_a_kept_alive_connection(relay: Relay) -> None:
    headers = [(b"Content-Type", b"text/plain"), (b"X-Odd_Name!#$%&'*+-.^`|~", b"v \t\x80\xff"),
               (b"Content-Length", b"5")]
    agent = await _agent(relay, {b"/a": (200, headers, b"hello"), b"/b": (204, [(b"X-B", b"1")], b""),
                                 b"/c": (304, [(b"ETag", b'"1"'), (b"Content-Length", b"99")], b"")})
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        got = []
        async with asyncio.timeout(5):
            for target in (b"/a", b"/b", b"/c", b"/a"):
                writer.write(b"GET " + target + b" HTTP/1.1\r\n" + HOST + b"\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                body = await reader.readexactly(5) if target == b"/a" else b""
                got.append(head + body)
        writer.close()
    finally:
        await agent.close()
    fixed = [line for line in got[0].split(b"\r\n") if not line.startswith((b"date:", b"server:"))]
    assert fixed == [b"HTTP/1.1 200 OK", b"content-type: text/plain", b"x-odd_name!#$%&'*+-.^`|~: v \t\x80\xff",
                     b"content-length: 5", b"", b"hello"]
    assert got[3] == got[0].replace(_date(got[0]), _date(got[3]))
    assert got[1].startswith(b"HTTP/1.1 204 No Content\r\n") and b"x-b: 1\r\n" in got[1]
    assert got[2].startswith(b"HTTP/1.1 304 Not Modified\r\n") and b"content-length: 99\r\n" in got[2]


def _date(response: bytes) -> bytes:
    lines = [line for line in response.split(b"\r\n") if line.startswith(b"date:")]
    return lines[0] if lines else b"\r\n\r\n"


@pytest.mark.parametrize("status", [101, 403])
@pytest.mark.parametrize("name", [b"", b"x-\xff"], ids=["empty", "high-byte"])
async def test_a_websocket_handshakes_answer_with_a_name_that_is_not_a_token_gets_the_client_a_502(
    status: int, name: bytes
) -> None:
    async def answer(request: AgentRequest) -> None:
        request.respond(status, [(name, b"1"), (b"X-Ok", b"1")], end=status != 101)

    async with running_relay() as relay:
        agent = await connect_agent(relay, handler=answer)
        try:
            got = await _read_all(relay, b"GET /ws HTTP/1.1\r\n" + HOST + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        finally:
            await agent.close()
    head, body = _response(got)
    assert head.status_code == 502 and b"the header name '" in body and body.endswith(b"' is not a token\n"), got
    sent_head = got.split(b"\r\n\r\n", 1)[0]
    assert b"\r\n: " not in sent_head and b"\xff" not in sent_head and b"x-ok" not in sent_head.lower(), got
