"""The one rule for request heads the relay and the agent both apply."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtunnel.values import request_head
from devtunnel.values.request_head import (
    absolute_form, answer_text, field_is_safe, fields_are_safe, head_problem, host_problem, method_problem, target_problem,
    version_problem,
)

HOST = (b"Host", b"app.localhost")


@pytest.mark.parametrize(
    ("method", "target"),
    [
        (b"GET", b"/"),
        (b"GET", b"/hooks/stripe?id=1&x=%20"),
        (b"POST", b"//127.0.0.1:9/x"),  # origin-form: a path whose first segment is empty
        (b"GET", "/caf\u00e9".encode()),  # raw UTF-8, as some clients send it
        (b"OPTIONS", b"*"),
        (b"PROPFIND", b"/dav"),
    ],
)
def test_paths_and_options_star_are_accepted(method: bytes, target: bytes) -> None:
    assert head_problem(method, target, [HOST]) is None


@pytest.mark.parametrize(
    ("method", "target", "why"),
    [
        (b"GET", b"*@127.0.0.1:19083/internal-admin?secret=1", "is not a path"),
        (b"GET", b"@127.0.0.1:19083/x", "is not a path"),
        (b"GET", b"http://127.0.0.1:19083/x", "is not a path"),
        (b"GET", b"127.0.0.1:19083", "is not a path"),
        (b"GET", b"", "is not a path"),
        (b"GET", b"*", "only allowed with OPTIONS"),
        (b"CONNECT", b"127.0.0.1:22", "CONNECT is not forwarded"),
        (b"CONNECT", b"/x", "CONNECT is not forwarded"),
        (b"GET", b"/x HTTP/1.1\r\nHost: evil", "holds a space or a control character"),
        (b"GET", b"/x\x00", "holds a space or a control character"),
        (b"GET", b"/x\x7f", "holds a space or a control character"),
        (b"GET /x", b"/", "is not an HTTP token"),
        (b"", b"/", "is not an HTTP token"),
    ],
)
def test_anything_else_is_refused_with_a_reason(method: bytes, target: bytes, why: str) -> None:
    problem = head_problem(method, target, [HOST])
    assert problem is not None and why in problem


def test_a_refused_value_is_quoted_short_and_as_it_came() -> None:
    # Each output escapes the message once (answer_text for a client, the CLI, the log); repr()
    # here escaped it a first time (an ESC showed as \\x1b, a byte not UTF-8 as \\xff).
    problem = target_problem(b"GET", b"http://x/" + b"\x1b[31m" * 100)
    assert problem is not None and "'http://x/\x1b[31m" in problem and "\u2026'" in problem and len(problem) < 200
    problem = target_problem(b"GET", "x\u202e\u00e9\x85".encode() + b"\xff")
    assert problem == "the request target 'x\u202e\u00e9\x85\ufffd' is not a path: send /path?query (origin-form)"
    problem.encode("utf-8")  # it can be recorded and sent
    assert answer_text(problem) == (
        "the request target 'x\\u202e\u00e9\\x85\ufffd' is not a path: send /path?query (origin-form)"
    )


def test_two_host_headers_are_refused_whatever_their_case() -> None:
    assert head_problem(b"GET", b"/", [HOST, (b"hOsT", b"admin.internal")]) == "the request has more than one Host header"
    assert head_problem(b"GET", b"/", [HOST, (b"X-Host", b"x")]) is None


@pytest.mark.parametrize(
    ("framing", "refused"),
    [((b"Content-Length", b"5"), True), ((b"Transfer-Encoding", b"chunked"), True),
     ((b"Content-Length", b"0"), False), ((b"Content-Length", b" 00 "), False)],
)
def test_an_upgrade_request_may_not_carry_a_body(framing: tuple[bytes, bytes], refused: bool) -> None:
    problem = head_problem(b"GET", b"/ws", [HOST, framing], upgrade=True)
    assert (problem == "an upgrade request must not carry a body") is refused
    assert head_problem(b"POST", b"/ws", [HOST, framing]) is None  # without upgrade a body is fine


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_an_accepted_target_is_a_path_or_options_star_and_cannot_end_the_request_line(method: bytes, target: bytes) -> None:
    if head_problem(method, target, [HOST]) is None:
        assert method_problem(method) is None and b" " not in method
        assert target.startswith(b"/") or (method, target) == (b"OPTIONS", b"*")
        assert not any(b in target for b in b" \r\n\t\x00")


@pytest.mark.parametrize(
    ("name", "value", "safe"),
    [(b"X-A", b"1, 2", True), (b"X-A", b"caf\xc3\xa9", True), (b"X-Evil", b"a\r\nInjected: 1", False),
     (b"X-Evil", b"a\nb", False), (b"X-Evil", b"a\x00", False), (b"X\r\nY", b"v", False), (b"X:Y", b"v", False),
     # Names that are no tokens: a server reads "Transfer-Encoding : chunked" as framing, another refuses it.
     (b"", b"v", False), (b"X Y", b"v", False), (b"Transfer-Encoding ", b"chunked", False), (b"X-\xc3\xa9", b"v", False),
     (b"X\x01", b"v", False)],
)
def test_a_field_is_safe_to_write_only_when_it_cannot_add_a_line(name: bytes, value: bytes, safe: bool) -> None:
    assert field_is_safe(name, value) is safe


def test_the_usual_methods_looked_up_in_a_set_are_tokens() -> None:
    from devtunnel.values.http1 import is_token
    from devtunnel.values.request_head import _USUAL_METHODS

    assert _USUAL_METHODS and all(is_token(method) for method in _USUAL_METHODS)
    assert b"CONNECT" not in _USUAL_METHODS  # refused by target_problem, whatever the set says


@pytest.mark.parametrize("host", [b"", b"victim.localhost", b"victim.localhost:8080", b"127.0.0.1:80", b"[::1]:80",
                                  b"[::1]", b"xn--caf-dma.localhost", b"host.:", b"victim.localhost:80 \t"])
def test_a_host_and_an_optional_port_is_a_host_header(host: bytes) -> None:
    assert head_problem(b"GET", b"/", [(b"Host", host)]) is None


@pytest.mark.parametrize("host, why", [
    (b"evil@victim.localhost", "holds user info (name@)"),
    (b"a@127.0.0.1", "holds user info (name@)"),
    (b"user:pw@127.0.0.1:80", "holds user info (name@)"),
    (b"victim.localhost/x", "holds '/'"),
    (b"victim.localhost\\x", "holds '\\'"),
    (b"victim .localhost", "holds byte 0x20"),
    (b"victim\x01.localhost", "holds byte 0x01"),
    (b"caf\xc3\xa9.localhost", "holds byte 0xc3"),
    (b"victim.localhost:80:81", "is not a host name or address with an optional port"),
    (b"[::1", "is not a host name or address with an optional port"),
    (b":80", "has a port but no host name or address before it"),
    (b":", "has a port but no host name or address before it"),
    (b": \t", "has a port but no host name or address before it"),
])
def test_a_host_header_with_anything_a_host_never_holds_is_refused(host: bytes, why: str) -> None:
    problem = head_problem(b"GET", b"/", [(b"host", host)])
    assert problem is not None and problem.startswith("the Host header ") and why in problem, problem


@pytest.mark.parametrize("host", [b":80", b":", b":8080 "])
def test_a_port_with_no_host_before_it_is_not_a_host(host: bytes) -> None:
    """RFC 9112 3.2 allows an empty Host; a port alone names no host, and the answer quotes it."""
    assert host_problem(host) == f"the Host header {host.decode()!r} has a port but no host name or address before it"
    assert host not in request_head._GOOD_HOSTS


def test_the_hosts_found_good_are_kept_bounded_and_a_bad_one_is_never_kept() -> None:
    from devtunnel.values import request_head

    for i in range(3000):
        assert head_problem(b"GET", b"/", [(b"Host", b"h%d.localhost" % i)]) is None
    assert head_problem(b"GET", b"/", [(b"Host", b"x" * 400)]) is None
    assert 0 < len(request_head._GOOD_HOSTS) <= request_head._HOSTS_KEPT
    assert b"x" * 400 not in request_head._GOOD_HOSTS
    for _ in range(2):  # refused every time, not only the first
        assert head_problem(b"GET", b"/", [(b"Host", b"a@h1.localhost")]) is not None
    assert b"a@h1.localhost" not in request_head._GOOD_HOSTS


@given(st.binary(max_size=40))
def test_a_target_is_refused_exactly_when_it_holds_a_space_control_or_del(rest: bytes) -> None:
    # The check is a translate table made from the rule; this holds the two to each other.
    target = b"/" + rest
    refused = any(byte <= 0x20 or byte == 0x7F for byte in target)
    assert (target_problem(b"GET", target) is not None) is refused


@given(st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=6)), min_size=1, max_size=6))
def test_fields_are_safe_exactly_when_each_field_is(fields: list[tuple[bytes, bytes]]) -> None:
    names, values = zip(*fields)
    assert fields_are_safe(names, values) is all(field_is_safe(n, v) for n, v in fields)


@pytest.mark.parametrize(("target", "read"), [
    (b"http://h.example/a?b=1", (b"h.example", b"/a?b=1")),
    (b"HTTPS://h.example:8443", (b"h.example:8443", b"/")),
    (b"http://[::1]:80?q", (b"[::1]:80", b"/?q")),
    (b"http://h/x#f", (b"h", b"/x#f")),
    (b"/a", None),
    (b"*", None),
    (b"ftp://h/x", None),
    (b"*@127.0.0.1:9/x", None),
])
def test_absolute_form_is_read_as_its_authority_and_an_origin_form_target(
    target: bytes, read: tuple[bytes, bytes] | None
) -> None:
    assert absolute_form(target) == read


@pytest.mark.parametrize(("target", "why"), [
    (b"http://u:p@h/x", "holds user info (name@) in its authority"),
    (b"http://@h/x", "holds user info"),
    (b"http:///x", "does not name a host"),
    (b"http://:8080/", "does not name a host"),
    (b"http://h:1:2/", "does not name a host"),
    (b"http://h\x1b[31m/", "does not name a host"),
])
def test_a_malformed_absolute_form_target_says_why(target: bytes, why: str) -> None:
    problem = absolute_form(target)
    assert isinstance(problem, str) and why in problem and "\x1b" not in answer_text(problem)


def test_an_options_request_for_a_whole_server_in_absolute_form_is_forwarded_as_star() -> None:
    # RFC 9112 3.2.4: OPTIONS http://host (no path, no query) is sent on as OPTIONS *.
    assert absolute_form(b"http://h:8080", b"OPTIONS") == (b"h:8080", b"*")
    assert absolute_form(b"http://h:8080/", b"OPTIONS") == (b"h:8080", b"/")
    assert absolute_form(b"http://h:8080?q", b"OPTIONS") == (b"h:8080", b"/?q")


@pytest.mark.parametrize(("version", "ok"), [
    (b"1.1", True), (b"1.0", True), (b"2.0", True), (b"0.9", True), (b"2", True), (b"HTTP/1.1", True),
    (b"", False), (b"1.1\x1b[2J", False), (b"1.1 ", False), (b"11.1", False), (b"1.1\r\nX: y", False), (b"\xd9\xa1.1", False),
])
def test_a_version_is_a_digit_a_dot_and_a_digit(version: bytes, ok: bool) -> None:
    assert (version_problem(version) is None) is ok
