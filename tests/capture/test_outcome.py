"""What a replay came to: same or different (volatile headers aside), status, reason, error line."""

from __future__ import annotations

from http import HTTPStatus

from devtunnel.capture.model import Exchange, Response
from devtunnel.capture.outcome import (
    VOLATILE_HEADERS,
    error_excerpt,
    replay_outcome,
    status_line,
)
from tests.kit.exchanges import make_exchange, make_response


def answered(status: int = 200, headers: list[tuple[str, str]] | None = None, body: bytes = b'{"ok":true}',
             reason: str = "", **fields: object) -> Exchange:
    response = make_response(status, headers if headers is not None else [("Content-Type", "application/json"),
                                                                          ("Date", "Mon, 01 Dec 2026 10:00:00 GMT")],
                             body, reason=reason)
    return make_exchange(response=response, id="01KB0OUTC0ME00000000000001", tunnel="t", started_at=1.0, **fields)


def test_only_a_new_date_is_the_same_response() -> None:
    replayed = answered(headers=[("Date", "Tue, 02 Dec 2026 08:00:00 GMT"), ("Content-Type", "application/json"),
                                 ("X-Request-Id", "r-2"), ("Server-Timing", "db;dur=3")])
    outcome = replay_outcome(answered(), replayed)
    assert (outcome.status, outcome.verdict, outcome.differs, outcome.error_body) == ("200 OK", "same response", False, "")


def test_a_changed_header_that_is_not_volatile_differs_unless_ignored() -> None:
    replayed = answered(headers=[("Content-Type", "application/json"), ("X-Build", "2")])
    original = answered(headers=[("Content-Type", "application/json"), ("X-Build", "1")])
    assert replay_outcome(original, replayed).verdict == "response differs"
    assert replay_outcome(original, replayed, ignore_headers=["x-build"]).verdict == "same response"


def test_volatile_headers_can_be_compared_too() -> None:
    replayed = answered(headers=[("Content-Type", "application/json"), ("Date", "later")])
    assert replay_outcome(answered(), replayed, volatile=False).differs
    assert "Date" in VOLATILE_HEADERS


def test_an_error_gives_its_reason_and_the_first_line_of_its_body() -> None:
    replayed = answered(422, [("Content-Type", "application/json")], b'{\n  "error": "coupon expired"\n}')
    outcome = replay_outcome(answered(), replayed)
    assert (outcome.status, outcome.verdict) == (f"422 {HTTPStatus(422).phrase}", "response differs")
    assert outcome.error_body == '{"error": "coupon expired"}'


def test_a_text_error_body_gives_its_first_non_blank_line_cut_short() -> None:
    body = b"\n\nTraceback (most recent call last):\n  File x\n"
    assert error_excerpt(Response(status=500, body=body, body_size=len(body))) == "Traceback (most recent call last):"
    long = b"x" * 500
    assert len(error_excerpt(Response(status=500, body=long, body_size=500))) == 160
    assert error_excerpt(Response(status=500, body=b"\x00\x01", body_size=2)) == "(binary body, 2 bytes)"


def test_the_sent_reason_is_kept() -> None:
    assert status_line(Response(status=404, reason="Nope")) == "404 Nope"
    assert status_line(Response(status=599)) == "599"


def test_no_response_is_a_failure_with_its_message() -> None:
    failed = make_exchange(id="x", tunnel="t", started_at=1.0, error="local_refused",
                           error_message="connection refused by http://127.0.0.1:9")
    outcome = replay_outcome(answered(), failed)
    assert outcome.failed and outcome.status == "ERR local_refused"
    assert outcome.verdict == "failed: connection refused by http://127.0.0.1:9" and outcome.differs is None


def test_an_original_without_a_response_cannot_be_compared() -> None:
    original = make_exchange(id="x", tunnel="t", started_at=1.0, error="local_refused")
    outcome = replay_outcome(original, answered(503, body=b"down"))
    assert (outcome.verdict, outcome.differs, outcome.error_body) == ("original had no response", None, "down")


def test_an_html_error_page_gives_its_title_and_text_not_its_doctype() -> None:
    # The page Python's http.server sends for a 501, as it sends it (a development server's
    # default error page): its first line is the doctype, which says nothing.
    import http.server
    import io

    class Handler(http.server.BaseHTTPRequestHandler):
        def __init__(self) -> None:  # no socket: only send_error's output is wanted
            self.wfile = io.BytesIO()
            self.request_version = "HTTP/1.1"
            self.command = "POST"
            self.requestline = "POST / HTTP/1.1"
            self.client_address = ("127.0.0.1", 0)

        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = Handler()
    handler.send_error(501, "Unsupported method ('POST')")
    head, body = handler.wfile.getvalue().split(b"\r\n\r\n", 1)
    assert body.startswith(b"<!DOCTYPE HTML>")
    page = make_response(501, [("Content-Type", "text/html;charset=utf-8")], body)
    assert error_excerpt(page) == ("Error response — Error code: 501 Message: Unsupported method ('POST'). "
                                   "Error code explanation: 501 - Server does not support this operation.")


def test_an_html_error_page_leaves_out_scripts_styles_and_markup_and_is_cut_short() -> None:
    body = (b"<!doctype html><html><head><title>KeyError at /hook</title><style>h1{color:red}</style>"
            b"<script>var a = '<b>';</script></head><body>\n<h1>KeyError at /hook</h1>\n"
            b"<pre class='exception_value'>'amount' &amp; more</pre><script>track()</script>"
            + b"<p>" + b"word " * 400 + b"</p></body></html>")
    page = make_response(500, [("Content-Type", "text/html")], body)
    excerpt = error_excerpt(page)
    assert excerpt.startswith("KeyError at /hook — 'amount' & more word word")
    assert len(excerpt) == 160 and excerpt.endswith("…")
    assert "color" not in excerpt and "track" not in excerpt and "<" not in excerpt
    # A body that says text/html but holds no markup is its own text; no text at all, the first line.
    plain = make_response(500, [("Content-Type", "text/html")], b"Internal Server Error")
    assert error_excerpt(plain) == "Internal Server Error"
    empty = make_response(500, [("Content-Type", "text/html")], b"<html><script>x()</script></html>")
    assert error_excerpt(empty) == "<html><script>x()</script></html>"
