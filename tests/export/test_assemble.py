"""The one HTTP/1.1 assembler: raw exports and the agent API's ``raw`` are valid messages a real parser reads back."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtunnel.capture.model import Headers, Request, Response
from devtunnel.export import export
from devtunnel.export.assemble import request_bytes, response_bytes
from devtunnel.export.agent_json import capture_json
from tests.kit.exchanges import make_exchange
from tests.net.tunnel_fixtures import local_http, parse_response, raw_request, relay_and_agent


async def exchange_with(port: int, message: bytes, timeout: float = 10.0) -> tuple[h11.Response, bytes]:
    """Send ``message`` to 127.0.0.1:port and read one whole response (the connection may stay open)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))  # puts h11 in the client's state
    conn.send(h11.EndOfMessage())
    head: h11.Response | None = None
    body = bytearray()
    try:
        writer.write(message)
        async with asyncio.timeout(timeout):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    head = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise AssertionError(f"unexpected {event!r}")
    finally:
        writer.close()
    assert head is not None
    return head, bytes(body)


def parsed_request(raw: bytes) -> tuple[h11.Request, bytes]:
    """The request and body h11 (a real, strict parser) reads from ``raw``; it must be one whole message."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            raise AssertionError(f"incomplete message: {event!r} after {bytes(body)!r}")
    assert head is not None
    return head, bytes(body)


def parsed_response(raw: bytes, *, close: bool = False) -> tuple[h11.Response, bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    if close:
        conn.receive_data(b"")
    head: h11.Response | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            raise AssertionError(f"incomplete message: {event!r}")
    assert head is not None
    return head, bytes(body)


def test_request_that_came_chunked_is_chunked_again_with_its_transfer_encoding() -> None:
    # As the agent records it: the relay took Transfer-Encoding away (hop-by-hop), the body is de-chunked.
    ex = make_exchange("POST", b"/upload", [(b"Host", b"h"), (b"Content-Type", b"text/plain")], b"part one\npart two\n")
    text = export("raw", ex).text
    assert text.startswith("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
    head, body = parsed_request(text.encode())
    assert body == b"part one\npart two\n"
    assert base64.b64decode(capture_json(ex)["request"]["raw"]) == text.encode()  # the API's raw is the same bytes


def test_binary_chunked_request_side_file_holds_the_exact_framed_message() -> None:
    ex = make_exchange("PUT", b"/bin", [(b"Host", b"h")], b"\x00\xff" * 10)
    result = export("raw", ex)
    (message,) = result.files.values()
    assert parsed_request(message)[1] == b"\x00\xff" * 10
    assert "[20 bytes of body that cannot be shown as text" in result.text


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=200),
    framing=st.sampled_from(["none", "length", "chunked"]),
    method=st.sampled_from(["POST", "PUT", "PATCH"]),
    cut=st.sampled_from([0, 1, 5000]),
)
def test_every_request_assembles_into_one_message_with_the_same_body(body: bytes, framing: str, method: str,
                                                                    cut: int) -> None:
    """``cut``: bytes past the body cap, not recorded (the head announced them all)."""
    size = len(body) + cut
    headers: list[tuple[bytes, bytes]] = [(b"Host", b"h"), (b"X-A", b"1")]
    if framing == "length":
        headers.append((b"Content-Length", str(size).encode()))
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
    request = Request(method=method, target=b"/x?y=1", headers=Headers(headers), body=body, body_size=size,
                      body_truncated=cut > 0)
    head, got = parsed_request(request_bytes(request))
    assert (head.method, head.target, got) == (method.encode(), b"/x?y=1", body)
    note = (b"devtunnel-note", f"body truncated: {len(body)} of {size} bytes were recorded".encode())
    assert (note in head.headers) == (cut > 0)


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=200), framing=st.sampled_from(["close", "length", "chunked"]),
       cut=st.sampled_from([0, 1, 5000]))
def test_every_response_assembles_into_one_message_with_the_same_body(body: bytes, framing: str, cut: int) -> None:
    size = len(body) + cut
    headers: list[tuple[bytes, bytes]] = [(b"Content-Type", b"application/octet-stream")]
    if framing == "length":
        headers.append((b"Content-Length", str(size).encode()))
    elif framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
    response = Response(status=200, headers=Headers(headers), body=body, body_size=size, body_truncated=cut > 0)
    head, got = parsed_response(response_bytes(response), close=framing == "close")
    assert head.status_code == 200 and got == body
    assert any(name == b"devtunnel-note" for name, _ in head.headers) == (cut > 0)


async def test_raw_export_of_a_chunked_request_through_a_tunnel_is_accepted_by_a_real_server(tmp_path: Path) -> None:
    body = b'{"event": "order.paid", "lines": ["a", "b"]}\n'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    with local_http() as (port, _):
        async with relay_and_agent(tmp_path) as h:
            await h.start(str(port), name="app")
            sent = (
                b"POST /echo?src=tunnel HTTP/1.1\r\nHost: " + h.host("app").encode() + b"\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks
            )
            status, _, _ = parse_response(await raw_request(h.relay.port, sent))
            assert status == 200
            (exchange,) = await h.exchanges(1)
        assert exchange.request.body == body
        result = export("raw", exchange)
        assert result.files == {}
        head, parsed_body = parsed_request(result.text.encode())
        assert parsed_body == body
        assert (b"transfer-encoding", b"chunked") in head.headers
        # The exported text, sent as it is to a real server (uvicorn with httptools), is one valid request.
        answer, echoed = await exchange_with(port, result.text.encode())
    assert answer.status_code == 200
    report = json.loads(echoed)
    assert base64.b64decode(report["body"]) == body and report["method"] == "POST"


async def test_raw_export_of_a_body_cut_at_the_cap_is_one_message_a_real_server_answers(tmp_path: Path) -> None:
    """The head kept the real Content-Length (300) over the 100 recorded bytes: a server read
    the file's message and waited for 200 bytes that never came."""
    body = b"0123456789" * 30
    with local_http() as (port, _):
        async with relay_and_agent(tmp_path, body_cap=100) as h:
            await h.start(str(port), name="app")
            sent = (
                b"POST /echo HTTP/1.1\r\nHost: " + h.host("app").encode() + b"\r\n"
                b"Content-Type: text/plain\r\nContent-Length: 300\r\nConnection: close\r\n\r\n" + body
            )
            status, _, _ = parse_response(await raw_request(h.relay.port, sent))
            assert status == 200
            (exchange,) = await h.exchanges(1)
        assert exchange.request.body_truncated and exchange.request.body == body[:100]
        result = export("raw", exchange)
        assert result.files == {}
        head, parsed_body = parsed_request(result.text.encode())
        assert parsed_body == body[:100]
        assert (b"content-length", b"100") in head.headers
        assert (b"devtunnel-note", b"body truncated: 100 of 300 bytes were recorded") in head.headers
        assert base64.b64decode(capture_json(exchange)["request"]["raw"]) == result.text.encode()  # the API's too
        answer, echoed = await exchange_with(port, result.text.encode(), timeout=5)
    assert answer.status_code == 200
    assert base64.b64decode(json.loads(echoed)["body"]) == body[:100]


@pytest.mark.parametrize("reason", ["Größe ✓", "Gr\udcf6e ✓"], ids=["utf-8", "with-a-byte-kept"])
def test_an_edited_reason_above_latin_1_goes_out_as_utf8_and_reads_back_the_same(reason: str) -> None:
    """A reason given as text (an edit, an import) holding a character above U+00FF was encoded
    as latin-1 with "?" for the rest (``Größe ?``, the byte ``\\xf6`` for ``ö``); it goes out as
    UTF-8, which a parser reads back, and the agent records (one character per byte) as the same
    text. A byte kept from an earlier reading (a ``surrogateescape`` surrogate) goes out as itself."""
    edited = Response(status=418, reason=reason, headers=Headers([("Content-Length", "0")]))
    ex = make_exchange("GET", b"/teapot", [(b"Host", b"h")], response=edited)
    raw = response_bytes(edited)
    wire = reason.encode("utf-8", "surrogateescape")
    assert raw.startswith(b"HTTP/1.1 418 " + wire + b"\r\n"), raw
    head, _ = parsed_response(raw)
    assert head.reason == wire
    back = Response(status=head.status_code, reason=head.reason.decode("latin-1"))  # as the agent records a reason
    assert back.reason_text == reason
    assert back.reason_json == edited.reason_json == reason.replace("\udcf6", "\ufffd")
    assert base64.b64decode(capture_json(ex)["response"]["raw"]) == raw  # the API's raw: the same bytes
    result = export("raw", ex, response=True)
    if reason.isprintable():
        assert f"\r\nHTTP/1.1 418 {reason}\r\n" in result.text, result.text
    else:  # a head that is not UTF-8 is written exactly to a side file
        assert raw in result.files.values()
    har = json.loads(export("har", ex).text)
    assert har["log"]["entries"][0]["response"]["statusText"] == edited.reason_json


def test_a_method_given_as_text_is_not_cut_to_a_question_mark() -> None:
    """The request line's method had the same latin-1 "replace": one from a database written
    elsewhere lost its characters above U+00FF."""
    request = Request(method="GÉT✓", target=b"/", headers=Headers([(b"Host", b"h")]))
    assert request_bytes(request).startswith("GÉT✓ / HTTP/1.1\r\n".encode())
    assert request_bytes(Request(method="G\xc9T", target=b"/")).startswith(b"G\xc9T / HTTP/1.1\r\n")  # as received
