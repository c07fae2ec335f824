"""``relay.headers.forward_request_headers``: a request whose headers include none the rule looks
at (``lowered`` given) is copied as it is, with the same result as the loop over its headers; a
client's Forwarded, X-Real-IP and X-Forwarded-* never pass, the relay's X-Forwarded-* do."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from devtunnel.relay.headers import forward_request_headers, relay_fields
from devtunnel.values.http1 import RELAY_SET

_NAMES = st.sampled_from([
    b"Host", b"User-Agent", b"Accept", b"Content-Type", b"Content-Length", b"Cookie", b"X-Request-Id",
    b"Connection", b"connection", b"Keep-Alive", b"TE", b"Upgrade", b"Proxy-Connection", b"Transfer-Encoding",
    b"X-Forwarded-For", b"x-forwarded-proto", b"X-Forwarded-Host", b"Devtunnel-Rule", b"Sec-WebSocket-Extensions",
    b"Forwarded", b"X-Real-IP", b"x-forwarded-port",
]) | st.binary(min_size=1, max_size=8)
_VALUES = st.sampled_from([b"", b"1", b"close", b"keep-alive, X-Request-Id", b"cookie", b"10.0.0.1"]) | st.binary(max_size=8)


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=10), st.sampled_from([b"", b"demo.localhost"]), st.booleans())
@example([(b"Host", b"h"), (b"Accept", b"*/*")], b"h", False)
@example([(b"Host", b"h"), (b"X-Forwarded-For", b"1.1.1.1")], b"h", False)
@example([(b"Host", b"h"), (b"Forwarded", b"for=1.1.1.1;host=evil"), (b"X-Real-IP", b"9.9.9.9")], b"h", False)
def test_with_the_lowered_names_the_headers_are_those_of_the_loop(
    headers: list[tuple[bytes, bytes]], host: bytes, websocket: bool
) -> None:
    lowered = [(name.lower(), value) for name, value in headers]
    by_loop = forward_request_headers(headers, host, b"203.0.113.9", b"https", websocket=websocket)
    assert forward_request_headers(headers, host, b"203.0.113.9", b"https", websocket=websocket, lowered=lowered) == by_loop
    # Whatever the client sent, the relay's own are there once each, and no other of the set is left.
    names = [name.lower() for name, _ in by_loop]
    own = relay_fields(host, b"https")
    for name, value in own:
        assert (name, value) in by_loop and names.count(name.lower()) == 1
    assert {n for n in names if n in RELAY_SET} == {name.lower() for name, _ in own}


def test_a_request_with_no_header_to_look_at_keeps_its_headers_and_gains_the_forwarded_ones() -> None:
    headers = [(b"Host", b"demo.localhost"), (b"Accept", b"*/*"), (b"X-Id", b"7")]
    lowered = [(name.lower(), value) for name, value in headers]
    assert forward_request_headers(headers, b"demo.localhost", b"203.0.113.9", b"http", lowered=lowered) == (
        *headers, (b"X-Forwarded-For", b"203.0.113.9"), (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"demo.localhost"),
    )
