"""Raw HTTP export: the bytes as captured, with exact side files for what cannot be shown."""

from __future__ import annotations

from devtunnel.capture.model import Headers, Response
from devtunnel.export import export
from tests.kit.exchanges import make_exchange

HEADERS = [(b"Host", b"pub.example"), (b"content-type", b"text/plain"), (b"X-Multi", b"a"), (b"x-multi", b"b")]


def test_text_request_is_exact_http_with_crlf_and_header_case_and_order() -> None:
    ex = make_exchange("POST", b"/p?q=1%202", [*HEADERS, (b"Content-Length", b"13")], b"line 1\nline 2")
    result = export("raw", ex)
    assert result.text == (
        "POST /p?q=1%202 HTTP/1.1\r\nHost: pub.example\r\ncontent-type: text/plain\r\n"
        "X-Multi: a\r\nx-multi: b\r\nContent-Length: 13\r\n\r\nline 1\nline 2"
    )
    assert result.files == {}


def test_response_option_adds_the_response_after_the_request() -> None:
    response = Response(status=404, reason="Not Found", headers=Headers([("Content-Length", "2")]), body=b"no")
    result = export("raw", make_exchange(response=response), response=True)
    assert result.text == (
        "GET / HTTP/1.1\r\nHost: pub.example\r\n\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"
    )


def test_binary_body_goes_to_a_side_file_with_the_exact_message() -> None:
    body = b"\x00\x01\xffbinary"
    ex = make_exchange("PUT", b"/blob", [(b"Host", b"h"), (b"Content-Length", b"9")], body)
    result = export("raw", ex, body_dir="out")
    path = f"out/{ex.id}.request.http"
    assert result.files == {path: b"PUT /blob HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n" + body}
    assert result.text == f"PUT /blob HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n[9 bytes of body that cannot be shown as text: exact message in {path}]\r\n"


def test_control_bytes_in_a_header_are_escaped_in_the_text_and_exact_in_the_file() -> None:
    ex = make_exchange(headers=[(b"Host", b"h"), (b"X-Evil", b"\x1b[2Jgone\xff")])
    result = export("raw", ex)
    assert "\x1b" not in result.text and "X-Evil: \\x1b[2Jgone\\xff" in result.text
    assert list(result.files.values()) == [b"GET / HTTP/1.1\r\nHost: h\r\nX-Evil: \x1b[2Jgone\xff\r\n\r\n"]


def test_a_line_break_inside_a_stored_target_or_value_is_escaped_not_a_line_of_its_own() -> None:
    # Records made before the agent refused them may hold CR or LF inside a head's line.
    ex = make_exchange("GET", b"/a\nX-Target: 1", [(b"Host", b"h"), (b"X-Evil", b"v\r\nInjected: 1"), (b"X-Lf", b"a\nb")])
    result = export("raw", ex)
    lines = result.text.split("\r\n")
    assert lines[:5] == ["GET /a\\x0aX-Target: 1 HTTP/1.1", "Host: h", "X-Evil: v\\x0d\\x0aInjected: 1", "X-Lf: a\\x0ab", ""]
    assert not any(line.startswith(("Injected", "X-Target")) for line in result.text.splitlines())
    assert list(result.files.values()) == [b"GET /a\nX-Target: 1 HTTP/1.1\r\nHost: h\r\nX-Evil: v\r\nInjected: 1\r\nX-Lf: a\nb\r\n\r\n"]


def test_missing_response_is_explained() -> None:
    ex = make_exchange(error="local_refused", error_message="connection refused")
    assert export("raw", ex, response=True).text.endswith("[no response (local_refused): connection refused]\r\n")


def test_a_truncated_body_is_framed_as_the_bytes_recorded_and_noted_in_the_head() -> None:
    ex = make_exchange("POST", b"/", [(b"Host", b"h"), (b"Content-Length", b"100")], b"abc")
    ex.request.body_size, ex.request.body_truncated = 100, True
    assert export("raw", ex).text == (
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
        "Devtunnel-Note: body truncated: 3 of 100 bytes were recorded\r\n\r\nabc"
    )


def test_redact_and_several_exchanges() -> None:
    one = make_exchange(headers=[(b"Host", b"h"), (b"Authorization", b"Basic dXNlcjpwYXNz")])
    two = make_exchange(target=b"/two")
    text = export("raw", [one, two], redact=True).text
    assert "dXNlcjpwYXNz" not in text and "Authorization: Basic <redacted>" in text
    assert text.index("GET / HTTP/1.1") < text.index("GET /two HTTP/1.1")
