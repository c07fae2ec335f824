"""``relay.headers.forward_request_headers``: a request whose headers include none the rule looks
at (``lowered`` given) is copied as it is, with the same result as the loop over its headers; the
Forwarded, X-Real-IP and X-Forwarded-* the relay sets (``relay_fields``) in RFC 7239's syntax."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from devtunnel.relay.headers import forward_request_headers, relay_fields

_NAMES = st.sampled_from([
    b"Host", b"User-Agent", b"Accept", b"Content-Type", b"Content-Length", b"Cookie", b"X-Request-Id",
    b"Connection", b"connection", b"Keep-Alive", b"TE", b"Upgrade", b"Proxy-Connection", b"Transfer-Encoding",
    b"X-Forwarded-For", b"x-forwarded-proto", b"X-Forwarded-Host", b"Devtunnel-Rule", b"Sec-WebSocket-Extensions",
    b"Forwarded", b"X-Real-IP", b"x-forwarded-port",
]) | st.binary(min_size=1, max_size=8)
_VALUES = st.sampled_from([b"", b"1", b"close", b"keep-alive, X-Request-Id", b"cookie", b"10.0.0.1"]) | st.binary(max_size=8)


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=10), st.sampled_from([b"", b"demo.localhost"]), st.booleans(),
       st.sampled_from([None, b"198.51.100.4", b"2001:db8::7"]))
@example([(b"Host", b"h"), (b"Accept", b"*/*")], b"h", False, None)
@example([(b"Host", b"h"), (b"X-Forwarded-For", b"1.1.1.1")], b"h", False, None)
@example([(b"Host", b"h"), (b"Forwarded", b"for=1.1.1.1;host=evil")], b"h", False, b"198.51.100.4")
def test_with_the_lowered_names_the_headers_are_those_of_the_loop(
    headers: list[tuple[bytes, bytes]], host: bytes, websocket: bool, client: bytes | None
) -> None:
    lowered = [(name.lower(), value) for name, value in headers]
    by_loop = forward_request_headers(headers, host, b"203.0.113.9", b"https", client=client, websocket=websocket)
    assert forward_request_headers(
        headers, host, b"203.0.113.9", b"https", client=client, websocket=websocket, lowered=lowered
    ) == by_loop
    # Whatever the client sent, the relay's own are there once each, and no client's is left.
    names = [name.lower() for name, _ in by_loop]
    for name, value in relay_fields(host, client or b"203.0.113.9", b"https"):
        assert (name, value) in by_loop and names.count(name.lower()) == 1
    assert (b"x-forwarded-host" in names) == (b"x-forwarded-port" in names) == bool(host)


def test_a_request_with_no_header_to_look_at_keeps_its_headers_and_gains_the_forwarded_ones() -> None:
    headers = [(b"Host", b"demo.localhost"), (b"Accept", b"*/*"), (b"X-Id", b"7")]
    lowered = [(name.lower(), value) for name, value in headers]
    assert forward_request_headers(headers, b"demo.localhost", b"203.0.113.9", b"http", lowered=lowered) == (
        *headers, (b"X-Forwarded-For", b"203.0.113.9"), (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"demo.localhost"), (b"X-Forwarded-Port", b"80"), (b"X-Real-IP", b"203.0.113.9"),
        (b"Forwarded", b"for=203.0.113.9;host=demo.localhost;proto=http"),
    )


@pytest.mark.parametrize(("host", "client", "proto", "forwarded", "port"), [
    (b"demo.localhost", b"203.0.113.9", b"https", b"for=203.0.113.9;host=demo.localhost;proto=https", b"443"),
    (b"demo.localhost:8080", b"::1", b"http", b'for="[::1]";host="demo.localhost:8080";proto=http', b"8080"),
    (b"[::1]:4000", b"2001:db8::1", b"http", b'for="[2001:db8::1]";host="[::1]:4000";proto=http', b"4000"),
    (b"[::1]", b"10.0.0.1", b"https", b'for=10.0.0.1;host="[::1]";proto=https', b"443"),
    (b"a.example:", b"10.0.0.1", b"http", b'for=10.0.0.1;host="a.example:";proto=http', b"80"),
    (b"a;b=c,d", b"10.0.0.1", b"http", b'for=10.0.0.1;host="a;b=c,d";proto=http', b"80"),
    (b"", b"", b"http", b"for=unknown;proto=http", None),
])
def test_the_relays_own_fields_say_one_thing_in_rfc_7239s_syntax(
    host: bytes, client: bytes, proto: bytes, forwarded: bytes, port: bytes | None
) -> None:
    fields = dict(relay_fields(host, client, proto))
    assert fields[b"Forwarded"] == forwarded
    assert fields.get(b"X-Forwarded-Port") == port
    assert fields.get(b"X-Forwarded-Host") == (host or None)
    assert fields.get(b"X-Real-IP") == (client or None)
    assert fields[b"X-Forwarded-Proto"] == proto
