"""The tunnel's transparency, differentially: each exchange is sent once straight to a local
service that records what it receives, and once through a real relay and agent, and the two are
compared: what the service received (request line, header names, values, case and order, body
bytes) and what the client got (status, headers, body). The differences docs/relay.md lists ("What
the relay does to traffic", "Through the tunnel and straight to the service") are taken out before
comparing: the ``Host`` (the tunnel's name), hop-by-hop fields, ``X-Forwarded-*``, ``Forwarded``
and ``X-Real-IP`` (the relay's own), the framing,
response header names' case. Anything else that differs is a bug.

The same exchanges are checked in the store: the record holds what the service was sent and what
it answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import pytest

from tests.net.tunnel_fixtures import Harness, local_websocket, raw_server, relay_and_agent

Fields = list[tuple[bytes, bytes]]


# -- the local service: records what it receives, answers what the request's X-Script names ---------
@dataclass
class Received:
    method: bytes = b""
    target: bytes = b""
    headers: Fields = field(default_factory=list)
    trailers: Fields = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    keep_alive: bool = True


def _head(status: bytes, headers: Fields, body: bytes = b"") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n" + body


def _sized(status: bytes, headers: Fields, body: bytes = b"") -> bytes:
    return _head(status, [*headers, (b"Content-Length", str(len(body)).encode())], body)


_GZIPPED = gzip.compress(b"hello " * 1000)
_BIG = bytes(range(256)) * 8192  # 2 MiB

#: What the service writes for each script: bytes, then "close" (ends the connection) or "reset".
SCRIPTS: dict[bytes, Callable[[Received], list[bytes | str]]] = {
    b"echo": lambda r: [_sized(b"200 OK", [(b"X-A", b"1")], b"ok:" + r.body[:64])],
    b"head": lambda r: [_head(b"200 OK", [(b"Content-Length", b"1234"), (b"Content-Type", b"text/plain")])],
    b"204": lambda r: [_head(b"204 No Content", [(b"X-Thing", b"a"), (b"ETag", b'"x"'), (b"Cache-Control", b"no-store")])],
    b"cookies": lambda r: [_sized(b"200 OK", [(b"Set-Cookie", b"c%d=v%d; Path=/; HttpOnly" % (i, i)) for i in range(40)]
                                  + [(b"X-Between", b"b"), (b"Set-Cookie", b"last=1")])],
    b"repeat": lambda r: [_sized(b"200 OK", [(b"X-R", b"1"), (b"x-r", b"2"), (b"X-Other", b"o"), (b"X-R", b"3"),
                                             (b"Vary", b"A"), (b"Vary", b"B")])],
    b"obs-text": lambda r: [_sized(b"200 OK", [(b"X-Latin", b"caf\xe9"), (b"X-Utf8", "café ☃".encode()),
                                               (b"X-Tab", b"a\tb"), (b"X-Empty", b"")])],
    b"long": lambda r: [_sized(b"200 OK", [(b"X-Long", b"v" * 16000), (b"X-Long2", b"w" * 30000)])],
    b"many": lambda r: [_sized(b"200 OK", [(b"X-H%d" % i, b"%d" % i) for i in range(300)])],
    b"padded": lambda r: [_head(b"200 OK", [(b"X-Pad", b"  padded \t "), (b"X-Inner", b"a  b  "),
                                            (b"Content-Length", b"2 ")], b"ok")],
    b"chunked": lambda r: [_head(b"200 OK", [(b"Transfer-Encoding", b"chunked")])
                           + b"0003\r\nabc\r\nA;ext=1\r\n0123456789\r\n0\r\n\r\n"],
    b"gzip": lambda r: [_sized(b"200 OK", [(b"Content-Encoding", b"gzip"), (b"Content-Type", b"text/plain")], _GZIPPED)],
    b"big": lambda r: [_sized(b"200 OK", [], _BIG)],
    b"range": lambda r: [_sized(b"206 Partial Content", [(b"Content-Range", b"bytes 0-1/10"), (b"Accept-Ranges", b"bytes")], b"ok")],
    b"odd-status": lambda r: [_sized(b"299 Whatever", [], b"ok")],
    b"no-reason": lambda r: [b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"],
    b"date-server": lambda r: [_sized(b"200 OK", [(b"Server", b"mine/1.0"), (b"Date", b"Mon, 01 Jan 2001 00:00:00 GMT")])],
    b"205": lambda r: [_sized(b"205 Reset Content", [])],
    b"conn-named": lambda r: [_sized(b"200 OK", [(b"Connection", b"X-Internal"), (b"X-Internal", b"secret"),
                                                 (b"Keep-Alive", b"timeout=5"), (b"X-Keep", b"1")])],
    b"close-after": lambda r: [_sized(b"200 OK", [(b"Connection", b"close")], b"ok"), "close"],
    b"reset-mid": lambda r: [_head(b"200 OK", [(b"Content-Length", b"100000")], b"x" * 5000), "reset"],
    b"close-mid": lambda r: [_head(b"200 OK", [(b"Content-Length", b"100000")], b"x" * 5000), "close"],
    b"chunked-cut": lambda r: [_head(b"200 OK", [(b"Transfer-Encoding", b"chunked")], b"5\r\nhello\r\n"), "close"],
    b"chunked-reset": lambda r: [_head(b"200 OK", [(b"Transfer-Encoding", b"chunked")], b"5\r\nhello\r\n"), "reset"],
    b"417": lambda r: [_sized(b"417 Expectation Failed", [], b"nope")],
    # A 304's Content-Length is the length the 200 would have had (RFC 9110 8.6): no body follows.
    b"304": lambda r: [_head(b"304 Not Modified", [(b"ETag", b'"v1"'), (b"Content-Length", b"1234"),
                                                  (b"Cache-Control", b"max-age=60")])],
    b"304-bare": lambda r: [_head(b"304 Not Modified", [(b"ETag", b'"v1"')])],
}



def _coded(coding: bytes) -> Callable[[Received], list[bytes | str]]:
    coded = gzip.compress(b"hello")
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(coded), coded) if coding.endswith(b"chunked") else coded
    return lambda r: [_head(b"200 OK", [(b"Transfer-Encoding", coding)]) + body, "close"]


_CODINGS = [b"gzip, chunked", b"gzip", b"deflate,chunked"]
SCRIPTS.update({b"coded " + coding: _coded(coding) for coding in _CODINGS})


class RecordingService:
    """A raw HTTP/1.1 service (httptools) that keeps each request as it came, and answers it with
    the script its ``X-Script`` header names (``echo`` without one)."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done: list[Received] = []
        current: list[Received] = []
        in_head = [True]

        class Callbacks:
            def on_message_begin(self) -> None:
                current[:] = [Received()]
                in_head[0] = True

            def on_url(self, url: bytes) -> None:
                current[0].target += url

            def on_header(self, name: bytes, value: bytes) -> None:
                (current[0].headers if in_head[0] else current[0].trailers).append((name, value))

            def on_headers_complete(self) -> None:
                in_head[0] = False
                current[0].method = parser.get_method()
                current[0].keep_alive = parser.should_keep_alive()

            def on_body(self, body: bytes) -> None:
                current[0].body += body

            def on_message_complete(self) -> None:
                current[0].complete = True
                done.append(current[0])

        parser = httptools.HttpRequestParser(Callbacks())
        try:
            while data := await reader.read(65536):
                parser.feed_data(data)
                while done:
                    request = done.pop(0)
                    self.received.append(request)
                    script = dict((n.lower(), v) for n, v in request.headers).get(b"x-script", b"echo")
                    for step in SCRIPTS[script](request):
                        if step == "close":
                            await writer.drain()
                            writer.close()
                            return
                        if step == "reset":
                            await writer.drain()
                            writer.transport.abort()
                            return
                        assert isinstance(step, bytes)
                        writer.write(step)
                    await writer.drain()
                    if not request.keep_alive:
                        writer.close()
                        return
        except (ConnectionError, httptools.HttpParserError):
            pass
        writer.close()


# -- the client ------------------------------------------------------------------------------------
async def send(port: int, data: bytes, *, then: bytes = b"", timeout: float = 20.0) -> bytes:
    """Send raw bytes (``then`` once the first answer bytes came, as a client that waited for a
    ``100 Continue``), and read to the end of the connection (the last request says
    ``Connection: close``), a reset ending it too."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = bytearray()
    try:
        writer.write(data)
        async with asyncio.timeout(timeout):
            if then:
                out += await reader.read(65536)
                writer.write(then)
            while chunk := await reader.read(65536):
                out += chunk
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return bytes(out)


@dataclass
class Answer:
    status: int
    headers: Fields
    body: bytes
    whole: bool = True


def read_answers(raw: bytes, heads: list[bool]) -> list[Answer]:
    """The responses in a connection's bytes (interim ones too), bodies unframed: ``heads`` says
    which requests were HEADs. A body cut short is kept with ``whole`` False."""
    answers: list[Answer] = []
    rest = raw
    finals = 0
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        fields: Fields = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields.append((name, value.strip(b" \t")))
        answer = Answer(status, fields, b"")
        answers.append(answer)
        if 100 <= status < 200:
            continue
        head_only = heads[finals] if finals < len(heads) else False
        finals += 1
        lower = {n.lower(): v for n, v in fields}
        if head_only or status in (204, 304):
            continue
        if b"chunked" in lower.get(b"transfer-encoding", b"").lower():
            body = bytearray()
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                if not size_line:  # the connection ended before the last chunk
                    answer.whole = False
                    break
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    rest = rest.partition(b"\r\n\r\n")[2] if not rest.startswith(b"\r\n") else rest[2:]
                    break
                body += rest[:size]
                rest = rest[size + 2:]
            answer.body = bytes(body)
        elif b"content-length" in lower:
            size = int(lower[b"content-length"])
            answer.body, rest = rest[:size], rest[size:]
            answer.whole = len(answer.body) == size
        else:
            answer.body, rest = rest, b""
    return answers


# -- what is compared ------------------------------------------------------------------------------
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}


def _named_by_connection(fields: Fields) -> set[bytes]:
    return {t.strip().lower() for n, v in fields if n.lower() == b"connection" for t in v.split(b",")}


def as_compared(request: Received) -> dict[str, Any]:
    """A received request without what the relay documents it changes (Host, hop-by-hop fields,
    X-Forwarded-*, Forwarded, X-Real-IP)."""
    named = _named_by_connection(request.headers)
    headers = [(n, v) for n, v in request.headers
               if n.lower() not in _HOP_BY_HOP | named | {b"host", b"forwarded", b"x-real-ip"}
               and not n.lower().startswith(b"x-forwarded-")]
    return {"method": request.method, "target": request.target, "headers": headers, "body": request.body,
            "complete": request.complete}


def answer_compared(answer: Answer) -> dict[str, Any]:
    """An answer without its hop-by-hop fields, names lowercased (uvicorn writes them so)."""
    named = _named_by_connection(answer.headers)
    headers = [(n.lower(), v) for n, v in answer.headers if n.lower() not in _HOP_BY_HOP | named]
    return {"status": answer.status, "headers": headers, "body": answer.body, "whole": answer.whole}


def request(method: str, target: bytes, headers: Fields = (), body: bytes = b"", *,  # type: ignore[assignment]
            version: bytes = b"HTTP/1.1", script: bytes = b"echo", close: bool = True) -> bytes:
    """A raw request to ``{HOST}`` (the service's address, or the tunnel's name)."""
    fields = [(b"Host", b"{HOST}"), *headers, (b"X-Script", script)]
    if close:
        fields.append((b"Connection", b"close"))
    return (method.encode() + b" " + target + b" " + version + b"\r\n"
            + b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"\r\n" + body)


@dataclass
class Sides:
    direct: list[Received]
    tunnel: list[Received]
    direct_answers: list[Answer]
    tunnel_answers: list[Answer]


@dataclass
class Bench:
    harness: Harness
    service: RecordingService
    port: int

    async def both(self, data: bytes, *, then: bytes = b"", heads: list[bool] | None = None) -> Sides:
        """``data`` sent straight to the service, then through the tunnel."""
        results = []
        for port, host in ((self.port, f"127.0.0.1:{self.port}"), (self.harness.relay.port, self.harness.host("app"))):
            before = len(self.service.received)
            raw = await send(port, data.replace(b"{HOST}", host.encode()), then=then)
            results.append((self.service.received[before:], read_answers(raw, heads or [False] * 64)))
        (direct, direct_answers), (tunnel, tunnel_answers) = results
        return Sides(direct, tunnel, direct_answers, tunnel_answers)


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    service = RecordingService()
    with raw_server(service.handle) as port:
        async with relay_and_agent(tmp_path) as harness:
            await harness.start(str(port))
            yield Bench(harness, service, port)


def assert_same(sides: Sides) -> None:
    assert [as_compared(r) for r in sides.tunnel] == [as_compared(r) for r in sides.direct]
    assert [answer_compared(a) for a in sides.tunnel_answers] == [answer_compared(a) for a in sides.direct_answers]


# -- the corpus: exchanges that must come out the same both ways ---------------------------------------
_LARGE = bytes(range(256)) * 12000  # about 3 MiB: several flow-control windows
SAME: dict[str, tuple[bytes, list[bool]]] = {
    "GET": (request("GET", b"/plain"), []),
    "HEAD and its Content-Length": (request("HEAD", b"/h", script=b"head"), [True]),
    "HEAD from an HTTP/1.0 client": (request("HEAD", b"/h", version=b"HTTP/1.0", script=b"head", close=False), [True]),
    "204 with headers": (request("GET", b"/", script=b"204"), []),
    "304 with the Content-Length of the 200": (request("GET", b"/", [(b"If-None-Match", b'"v1"')], script=b"304"), []),
    "304 without a Content-Length": (request("GET", b"/", [(b"If-None-Match", b'"v1"')], script=b"304-bare"), []),
    "304 with a Content-Length to a HEAD": (request("HEAD", b"/", script=b"304"), [True]),
    "304 with a Content-Length, kept alive, then another request": (
        request("GET", b"/1", script=b"304", close=False) + request("GET", b"/2"), []),
    "304 with a Content-Length to a large upload": (
        request("POST", b"/up", [(b"Content-Length", str(len(_BIG)).encode())], _BIG, script=b"304"), []),
    "205": (request("GET", b"/", script=b"205"), []),
    "many Set-Cookie": (request("GET", b"/", script=b"cookies"), []),
    "repeated response headers in order": (request("GET", b"/", script=b"repeat"), []),
    "repeated request headers in order and case": (
        request("GET", b"/", [(b"X-R", b"1"), (b"x-r", b"2"), (b"X-O", b"o"), (b"X-R", b"3"), (b"Accept", b"a"),
                              (b"accept", b"b")]), []),
    "obs-text and UTF-8 response values": (request("GET", b"/", script=b"obs-text"), []),
    "obs-text and UTF-8 request values": (
        request("GET", b"/", [(b"X-Latin", b"caf\xe9"), (b"X-Utf8", "café ☃".encode()), (b"X-Tab", b"a\tb"),
                              (b"X-Empty", b""), (b"X-Sp", b"a  b")]), []),
    "long response values": (request("GET", b"/", script=b"long"), []),
    "long request values": (request("GET", b"/", [(b"X-Long", b"v" * 16000), (b"X-Long2", b"w" * 30000)]), []),
    "300 response headers": (request("GET", b"/", script=b"many"), []),
    "300 request headers": (request("GET", b"/", [(b"X-H%d" % i, b"%d" % i) for i in range(300)]), []),
    "a long target": (request("GET", b"/" + b"a" * 30000 + b"?" + b"b" * 20000), []),
    "odd encodings in the target": (request("GET", b"/a%2Fb/c;p=1?q=a+b&r=%2F&s=;x&t=%E2%98%83&u=%zz&%=&v=%00"), []),
    "dots and double slashes": (request("GET", b"//a/./b/../c//d"), []),
    "an empty query": (request("GET", b"/a?"), []),
    "a bare ?": (request("GET", b"/?"), []),
    "an empty query on an upload larger than a window": (
        request("POST", b"/up?", [(b"Content-Length", str(len(_BIG)).encode())], _BIG), []),
    "question marks in the query": (request("GET", b"/a??b=?c"), []),
    "OPTIONS *": (request("OPTIONS", b"*"), []),
    "TRACE": (request("TRACE", b"/"), []),
    "GET with a body": (request("GET", b"/x", [(b"Content-Length", b"3")], b"abc"), []),
    "Content-Length with leading zeros": (request("POST", b"/", [(b"Content-Length", b"003")], b"abc"), []),
    "POST without a length": (request("POST", b"/"), []),
    "HTTP/1.0 POST": (request("POST", b"/", [(b"Content-Length", b"3")], b"abc", version=b"HTTP/1.0", close=False), []),
    "a chunked upload": (request("POST", b"/up", [(b"Transfer-Encoding", b"chunked")],
                                 b"3\r\nabc\r\n4;e=1\r\ndefg\r\n0\r\n\r\n"), []),
    "fields named by Connection": (request("GET", b"/", [(b"Connection", b"X-Hop"), (b"X-Hop", b"1"), (b"X-Keep", b"2")]), []),
    "response fields named by Connection": (request("GET", b"/", script=b"conn-named"), []),
    "Forwarded and Via kept": (request("GET", b"/", [(b"Forwarded", b"for=1.2.3.4"), (b"Via", b"1.1 foo")]), []),
    "TE: trailers": (request("GET", b"/", [(b"TE", b"trailers")]), []),
    "a chunked response with odd chunk sizes": (request("GET", b"/", script=b"chunked"), []),
    "a gzip body untouched": (request("GET", b"/", [(b"Accept-Encoding", b"gzip")], script=b"gzip"), []),
    "a range answer": (request("GET", b"/", [(b"Range", b"bytes=0-1")], script=b"range"), []),
    "a status with no standard reason": (request("GET", b"/", script=b"odd-status"), []),
    "a status line without a reason": (request("GET", b"/", script=b"no-reason"), []),
    "the service's own Date and Server, and none added": (request("GET", b"/", script=b"date-server"), []),
    "a large body down": (request("GET", b"/", script=b"big"), []),
    "a large body up": (request("POST", b"/up", [(b"Content-Length", str(len(_LARGE)).encode())], _LARGE), []),
    "pipelined requests": (
        request("GET", b"/1", close=False) + request("POST", b"/2", [(b"Content-Length", b"3")], b"abc", close=False)
        + request("HEAD", b"/3", script=b"head", close=False) + request("GET", b"/4"), [False, False, True, False]),
    "twenty pipelined POSTs": (b"".join(request("POST", b"/%d" % i, [(b"Content-Length", b"5")], b"%05d" % i,
                                                close=i == 19) for i in range(20)), []),
    "HTTP/1.0 kept alive": (request("GET", b"/1", [(b"Connection", b"keep-alive")], version=b"HTTP/1.0", close=False)
                            + request("GET", b"/2", version=b"HTTP/1.0", close=False), []),
    "a server that resets mid-body": (request("GET", b"/", script=b"reset-mid"), []),
    "a server that closes mid-body": (request("GET", b"/", script=b"close-mid"), []),
    "a server that closes mid-chunked-body": (request("GET", b"/", script=b"chunked-cut"), []),
    "a server that resets mid-chunked-body": (request("GET", b"/", script=b"chunked-reset"), []),
}


@pytest.mark.parametrize("name", list(SAME))
async def test_the_service_and_the_client_see_the_same_through_the_tunnel(bench: Bench, name: str) -> None:
    data, heads = SAME[name]
    assert_same(await bench.both(data, heads=heads))


# -- the record: what the service was sent, and what it answered ---------------------------------------
RECORDED = [
    "GET", "HEAD and its Content-Length", "204 with headers", "many Set-Cookie", "repeated request headers in order and case",
    "obs-text and UTF-8 request values", "obs-text and UTF-8 response values", "odd encodings in the target",
    "an empty query", "a bare ?", "a chunked upload", "a gzip body untouched", "a large body up", "a large body down",
    "304 with the Content-Length of the 200", "304 with a Content-Length, kept alive, then another request",
    "pipelined requests", "twenty pipelined POSTs", "a status line without a reason", "a server that closes mid-body",
    "a server that closes mid-chunked-body",
]


@pytest.mark.parametrize("name", RECORDED)
async def test_each_exchange_is_recorded_as_it_happened(bench: Bench, name: str) -> None:
    data, heads = SAME[name]
    await check_records(bench, data, heads)


async def check_records(bench: Bench, data: bytes, heads: list[bool], *, earlier: int = 0) -> None:
    """``data`` through the tunnel: each record holds the request the service received (but for the
    framing the agent chose) and the response the client got (but for hop-by-hop fields).
    ``earlier``: exchanges the tunnel carried before."""
    before = len(bench.service.received)
    raw = await send(bench.harness.relay.port, data.replace(b"{HOST}", bench.harness.host("app").encode()))
    received = bench.service.received[before:]
    answers = [a for a in read_answers(raw, heads) if not 100 <= a.status < 200]
    records = await bench.harness.exchanges(earlier + len(received))
    records = sorted(records, key=lambda ex: ex.started_at)[earlier:]
    assert len(records) == len(received) == len(answers)
    for record, sent, answer in zip(records, received, answers):
        assert (record.request.method.encode(), record.request.target) == (sent.method, sent.target)
        framing = {b"transfer-encoding", b"content-length"}
        assert [f for f in record.request.headers.fields if f[0].lower() not in framing] == [
            f for f in sent.headers if f[0].lower() not in framing]
        assert (record.request.body_size, record.request.body) == (len(sent.body), sent.body[:len(record.request.body)])
        assert record.response is not None
        got = answer_compared(answer)
        named = _named_by_connection(list(record.response.headers.fields))
        kept = [(n.lower(), v) for n, v in record.response.headers.fields if n.lower() not in _HOP_BY_HOP | named]
        if answer.status == 204:  # the relay drops a Content-Length there (docs/relay.md)
            kept = [f for f in kept if f[0] != b"content-length"]
        assert (record.response.status, kept) == (got["status"], got["headers"])
        assert (record.response.body_size, record.response.body) == (len(answer.body), answer.body[:len(record.response.body)])


async def test_response_field_values_lose_the_whitespace_around_them_on_the_way_and_in_the_record(bench: Bench) -> None:
    # A field's value has no whitespace around it (RFC 9110 5.5): llhttp drops what precedes it,
    # and the agent the rest, as the relay does for a request's fields.
    data = request("GET", b"/", script=b"padded")
    sides = await bench.both(data)
    assert_same(sides)
    raw = await send(bench.harness.relay.port, data.replace(b"{HOST}", bench.harness.host("app").encode()))
    assert b"x-pad: padded\r\nx-inner: a  b\r\n" in raw
    await check_records(bench, data, [], earlier=2)


@pytest.mark.parametrize("target", [b"/ws?", b"/ws?a=%2F+b", b"/ws;p?"])
async def test_a_websocket_handshake_reaches_the_service_with_its_target_as_sent(tmp_path: Path, target: bytes) -> None:
    with local_websocket() as (port, handshakes):
        async with relay_and_agent(tmp_path) as harness:
            await harness.start(str(port))
            reader, writer = await asyncio.open_connection("127.0.0.1", harness.relay.port)
            try:
                writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: " + harness.host("app").encode()
                             + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                async with asyncio.timeout(10):
                    head = await reader.readuntil(b"\r\n\r\n")
            finally:
                writer.close()
            assert head.startswith(b"HTTP/1.1 101")
            assert [h.path.encode() for h in handshakes] == [target]
            [record] = await harness.exchanges(1)
            assert record.request.target == target


async def _refuse_upload(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A service that answers 413 to the head of an upload and closes, its body unread (the
    close then resets the connection): the answer is there to read before the reset."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
    await writer.drain()
    writer.close()


def _upload(port: int, host: str, size: int) -> bytes:
    """POST ``size`` bytes, reading the answer while sending; what came before the end or a reset.

    Blocking sockets, the body sent from a thread: the kernel gives the bytes that came before a
    reset, where asyncio's streams may report a failed write's error first and lose them."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % (host.encode(), size))

        def pump() -> None:
            chunk = b"u" * 65536
            try:
                for _ in range(size // len(chunk)):
                    sock.sendall(chunk)
            except OSError:
                pass

        sender = threading.Thread(target=pump, daemon=True)
        sender.start()
        got = bytearray()
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # (the sender stops at its next write)
        sender.join(20)
    return bytes(got)


async def test_an_answer_the_service_sends_before_it_closes_on_an_unread_upload_reaches_the_client(
    tmp_path: Path,
) -> None:
    size = 4 << 20
    with raw_server(_refuse_upload) as port:
        direct = await asyncio.to_thread(_upload, port, "localhost", size)
        assert direct.startswith(b"HTTP/1.1 413") and direct.endswith(b"too big!")
        async with relay_and_agent(tmp_path) as harness:
            await harness.start(str(port))
            for _ in range(3):  # (the service's answer and its reset race the agent's writes)
                through = await asyncio.to_thread(_upload, harness.relay.port, harness.host("app"), size)
                assert through.startswith(b"HTTP/1.1 413 ") and through.endswith(b"too big!"), through[:300]
            records = await harness.exchanges(3)
    for record in records:
        assert record.response is not None and (record.response.status, record.response.body) == (413, b"too big!")
        assert record.error is None
        assert record.request.body_truncated, "the record must not pass a part of the body off as all of it"


@pytest.mark.parametrize("coding", _CODINGS)
async def test_a_response_transfer_coding_the_tunnel_cannot_carry_is_refused_not_passed_off_as_the_body(
    bench: Bench, coding: bytes
) -> None:
    # The relay frames the body itself and drops Transfer-Encoding (hop-by-hop): passed on, the
    # coded bytes would reach the client as the body, with nothing to say they are coded.
    raw = await send(bench.harness.relay.port, request("GET", b"/", script=b"coded " + coding).replace(
        b"{HOST}", bench.harness.host("app").encode()))
    [answer] = read_answers(raw, [False])
    assert answer.status == 502
    assert dict(answer.headers)[b"x-devtunnel-error"] == b"local_error"
    assert b"sent Transfer-Encoding: " + coding + b" (only chunked goes through the tunnel)" in answer.body
    [record] = await bench.harness.exchanges(1)
    assert record.error == "local_error"


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"deflate,chunked", b"x-custom ,\tchunked"])
async def test_a_request_transfer_coding_the_tunnel_cannot_carry_is_refused_not_passed_off_as_the_body(
    bench: Bench, coding: bytes
) -> None:
    # The agent frames the body itself: passed on, the coded bytes would reach the service as a
    # plain body (RFC 9112 6.1: a coding a server does not understand is refused).
    before = len(bench.service.received)
    raw = await send(bench.harness.relay.port, request(
        "POST", b"/", [(b"Transfer-Encoding", coding)], b"3\r\nabc\r\n0\r\n\r\n").replace(
        b"{HOST}", bench.harness.host("app").encode()))
    [answer] = read_answers(raw, [False])
    assert answer.status == 400
    assert b"names a coding other than chunked" in answer.body
    assert bench.service.received[before:] == []


async def test_a_304_reaches_curl_with_the_content_length_the_service_sent_and_no_wait_for_a_body(bench: Bench) -> None:
    # Two requests on one connection: curl reuses it only if the 304 ended where its head did.
    url = f"http://{bench.harness.host('app')}/page"
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-v", "--max-time", "10", "-H", "X-Script: 304", "-H", 'If-None-Match: "v1"', url,
        "--next", "-H", "X-Script: 304", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    verbose = err.decode()
    assert verbose.count("< HTTP/1.1 304 Not Modified") == 2, verbose
    assert verbose.count("< content-length: 1234") == 2, verbose
    assert "Re-using existing connection" in verbose or "Reusing existing" in verbose, verbose
    assert out == b""
    records = await bench.harness.exchanges(2)
    for record in records:
        assert record.response is not None and record.response.status == 304
        assert (b"Content-Length", b"1234") in record.response.headers.fields
