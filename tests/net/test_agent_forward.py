"""The forwarder's own HTTP/1.1 work: the request head it writes and the responses it reads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtunnel.agent.forward import Forwarder
from devtunnel.agent.local_response import BadResponse, LocalResponse
from devtunnel.values.target import parse_target
from devtunnel.protocol.events import RequestReceived
from devtunnel.values.request_head import field_is_safe


def head(headers: list[tuple[bytes, bytes]], *, method: bytes = b"GET", target: bytes = b"/p?q=1",
         end_stream: bool = True) -> RequestReceived:
    return RequestReceived(1, method, target, b"1.1", tuple(headers), end_stream)


def forwarder(target: str = "8080", host_header: str = "preserve") -> Forwarder:
    return Forwarder("t", parse_target(target), host_header=host_header)


def test_request_head_keeps_headers_in_order_case_and_raw_bytes() -> None:
    headers = [(b"Host", b"app.example"), (b"X-Dup", b"1"), (b"x-CASE", b"\xff\xfe raw"), (b"X-Dup", b"2")]
    raw = forwarder().request_head(head(headers), chunked=False)
    assert raw == b"GET /p?q=1 HTTP/1.1\r\nHost: app.example\r\nX-Dup: 1\r\nx-CASE: \xff\xfe raw\r\nX-Dup: 2\r\n\r\n"


def test_request_head_rewrites_host_to_the_target_and_adds_a_missing_one() -> None:
    rewritten = forwarder("http://10.0.0.5:3000/api", "rewrite").request_head(head([(b"host", b"pub")]), chunked=False)
    assert rewritten == b"GET /api/p?q=1 HTTP/1.1\r\nhost: 10.0.0.5:3000\r\n\r\n"
    added = forwarder().request_head(head([(b"Accept", b"*/*")]), chunked=False)
    assert added == b"GET /p?q=1 HTTP/1.1\r\nAccept: */*\r\nHost: 127.0.0.1:8080\r\n\r\n"


def test_request_head_drops_expect_continue_and_frames_a_body_without_length_as_chunked() -> None:
    headers = [(b"Host", b"h"), (b"Expect", b"100-Continue"), (b"Transfer-Encoding", b"chunked"), (b"X", b"y")]
    raw = forwarder().request_head(head(headers, method=b"POST", end_stream=False), chunked=True)
    assert raw == b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nX: y\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("bad", [(b"X-Evil", b"a\r\nInjected: 1"), (b"X-Evil", b"a\nb"), (b"X\r\nY", b"v"), (b"X:Y", b"v")])
def test_request_head_never_lets_a_header_add_lines(bad: tuple[bytes, bytes]) -> None:
    raw = forwarder().request_head(head([(b"Host", b"h"), bad, (b"Ok", b"1")]), chunked=False)
    assert raw == b"GET /p?q=1 HTTP/1.1\r\nHost: h\r\nOk: 1\r\n\r\n"


def reference_request_head(fwd: Forwarder, h: RequestReceived, *, chunked: bool) -> bytes:
    """The request head written field by field, each field checked on its own (the rule's plain form)."""
    out = [h.method, b" ", fwd.target.request_target(h.target), b" HTTP/1.1\r\n"]
    host, saw_host = fwd.target.authority.encode("ascii"), False
    for name, value in h.headers:
        lower = name.lower()
        if lower == b"host":
            saw_host = True
            value = host if fwd.rewrite_host else value
        elif (lower == b"expect" and value.lower() == b"100-continue") or lower == b"transfer-encoding":
            continue
        if field_is_safe(name, value):
            out += (name, b": ", value, b"\r\n")
    if not saw_host:
        out += (b"Host: ", host, b"\r\n")
    return b"".join(out) + (b"Transfer-Encoding: chunked\r\n" if chunked else b"") + b"\r\n"


_NAMES = st.sampled_from([b"Host", b"host", b"HOST", b"Expect", b"Transfer-Encoding", b"transfer-encoding", b"Accept",
                          b"X-A", b"hosts", b"xhost", b"Content-Length", b""]) | st.binary(max_size=12)
_VALUES = st.sampled_from([b"h", b"100-continue", b"100-Continue", b"chunked", b"", b"a: b"]) | st.binary(max_size=12)


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8), st.booleans(), st.sampled_from(["preserve", "rewrite"]))
def test_request_head_is_the_field_by_field_rule_whatever_the_fields(
    headers: list[tuple[bytes, bytes]], chunked: bool, host_header: str
) -> None:
    fwd = forwarder("http://127.0.0.1:3000/base", host_header)
    h = head(headers, end_stream=not chunked)
    assert fwd.request_head(h, chunked=chunked) == reference_request_head(fwd, h, chunked=chunked)


@pytest.mark.parametrize("names", [[b"Host", b"X\nHost"], [b"X\nexpect", b"Host"], [b"Host", b"a\nhost"],
                                   [b"Host\n", b"Host"], [b"Host", b"Expect"], [b"Host", b"Host"], [b"X", b"Y"]])
def test_request_head_is_the_field_by_field_rule_when_names_hide_newlines(names: list[bytes]) -> None:
    fwd = forwarder()
    h = head([(name, b"100-continue") for name in names])
    assert fwd.request_head(h, chunked=False) == reference_request_head(fwd, h, chunked=False)


def feed_all(response: LocalResponse, parts: list[bytes]) -> LocalResponse:
    for part in parts:
        response.feed(part)
    return response


RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n",
]


@given(st.sampled_from(RESPONSES), st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_responses_parse_the_same_however_the_bytes_are_split(raw: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(raw)) for c in cuts})
    parts = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)]) if raw[a:b]]
    whole = feed_all(LocalResponse(head_only=False), [raw])
    split = feed_all(LocalResponse(head_only=False), parts)
    body = b"".join(whole.body)
    assert (split.status, split.headers, b"".join(split.body), split.complete, split.keep_alive) == (
        whole.status, whole.headers, body, True, True)


KEPT_ALIVE = [*RESPONSES, b"HTTP/1.0 202 Accepted\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc",
              b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"]
HEAD_KEPT_ALIVE = [  # responses to HEAD that keep the connection: each ends with its head
    b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-A: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 3\n\n",
]


def _parsed(r: LocalResponse) -> tuple[object, ...]:
    return (r.status, bytes(r.reason), list(r.headers), r.version, r.head_done, r.complete, r.framed, r.extra,
            r.keep_alive, r.take_body())


_ANY_KEPT_ALIVE = [(raw, False) for raw in KEPT_ALIVE] + [(raw, True) for raw in HEAD_KEPT_ALIVE]


@given(st.lists(st.tuples(st.sampled_from(_ANY_KEPT_ALIVE), st.integers(min_value=0, max_value=120)), min_size=1,
                max_size=6))
def test_a_response_parser_used_again_reads_each_next_response_as_a_new_one_would(
    responses: list[tuple[tuple[bytes, bool], int]],
) -> None:
    # The quick path keeps a connection's parser for its next response (LocalResponse.again),
    # after a response to HEAD too (whose parser stopped after the head).
    reused = LocalResponse(head_only=responses[0][0][1])
    for i, ((raw, head_only), cut) in enumerate(responses):
        if i:
            assert reused.again(head_only) is reused
        fresh = LocalResponse(head_only=head_only)
        cut = min(cut, len(raw))
        for part in (raw[:cut], raw[cut:]):  # compared after each read: a quick answer looks at both
            if part:
                reused.feed(part)
                fresh.feed(part)
            assert _parsed(reused) == _parsed(fresh)


@pytest.mark.parametrize("raw, head_only", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody", True),  # HEAD answered with a body
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\r\n", True),  # ... or anything else after its head
    (b"HTTP/1.1 200 OK\r\n\r\n", True),  # HEAD without a length: the connection's end may delimit a GET's
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n", False),  # bytes after it
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhalf", False),  # not complete
])
def test_a_response_parser_is_not_used_again_unless_its_response_ended_cleanly_kept_alive(
    raw: bytes, head_only: bool,
) -> None:
    r = feed_all(LocalResponse(head_only=head_only), [raw])
    with pytest.raises(AssertionError):
        r.again(False)


def test_interim_responses_are_skipped() -> None:
    r = feed_all(LocalResponse(head_only=False), [RESPONSES[2]])
    assert (r.status, r.headers, r.take_body()) == (200, [(b"Content-Length", b"2")], b"ok")


@pytest.mark.parametrize("raw", HEAD_KEPT_ALIVE)
def test_a_head_response_ends_with_its_head_and_keeps_the_connection_however_its_bytes_are_split(raw: bytes) -> None:
    for cut in range(len(raw) + 1):
        r = feed_all(LocalResponse(head_only=True), [part for part in (raw[:cut], raw[cut:]) if part])
        assert r.head_done and r.complete and r.keep_alive and not r.extra, cut
        assert r.status == 200 and r.take_body() == b""
    followed = feed_all(LocalResponse(head_only=True), [raw[:-1], raw[-1:] + b"HTTP/1.1 200 OK\r\n\r\n"])
    assert followed.complete and followed.extra


def test_keep_alive_follows_the_response_framing_and_connection_header() -> None:
    close = feed_all(LocalResponse(head_only=False), [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"])
    old = feed_all(LocalResponse(head_only=False), [b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"])
    assert close.complete and old.complete and not close.keep_alive and not old.keep_alive


def test_end_of_connection_completes_an_unframed_body_but_breaks_a_framed_one() -> None:
    unframed = feed_all(LocalResponse(head_only=False), [b"HTTP/1.1 200 OK\r\n\r\nuntil close"])
    unframed.eof()
    assert unframed.complete and unframed.take_body() == b"until close" and not unframed.keep_alive
    framed = feed_all(LocalResponse(head_only=False), [b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort"])
    with pytest.raises(BadResponse, match="middle of the response body"):
        framed.eof()


def test_bytes_after_a_complete_response_mark_the_connection_unusable() -> None:
    r = feed_all(LocalResponse(head_only=False), [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n"])
    assert r.complete and r.extra


@pytest.mark.parametrize(("raw", "said"), [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "invalid HTTP response"),
    (b"HTTP/1.1 abc\r\n\r\n", "invalid HTTP response"),
    (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "the local service sent an invalid header: the header line 'Bad Header' holds no colon"),
])
def test_invalid_responses_raise_bad_response(raw: bytes, said: str) -> None:
    with pytest.raises(BadResponse, match=said):
        LocalResponse(head_only=False).feed(raw)


@given(st.sampled_from(RESPONSES), st.sampled_from([
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL",
    b"HTTP/1.1 500 Evil\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nEVIL\r\n0\r\n\r\n",
    b"\x00junk\r\n",
    b"H",
]), st.integers(min_value=0, max_value=200))
def test_bytes_after_a_complete_response_are_not_parsed_into_it(raw: bytes, after: bytes, cut: int) -> None:
    # They used to be: a second response queued behind the first replaced its status, headers
    # and body (a 204 followed by "200 EVIL" reached the client as "200 EVIL").
    alone = feed_all(LocalResponse(head_only=False), [raw])
    both = raw + after
    r = LocalResponse(head_only=False)
    for part in (both[:cut], both[cut:]):
        if not r.complete:  # as the forwarder: nothing is fed after a complete response
            r.feed(part)
    assert (r.status, r.headers, r.take_body()) == (alone.status, alone.headers, alone.take_body())
    # Unusable once a byte after the response was seen; cut right after it, none was fed (the
    # pool finds bytes arriving later: LocalConnection.usable).
    assert r.complete and r.extra == (cut != len(raw))
