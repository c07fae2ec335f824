"""Random request targets and heads against a real relay and agent on loopback.

Whatever a public client sends, the local services only ever see a path (or ``OPTIONS *``)
with one Host header: the client's own for a tunnel that preserves it, the target's for one
that rewrites it. A second service, which hostile targets name, never gets a connection. The
relay answers every request (forwarded, or 4xx) and keeps serving.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devtunnel.values.request_head import absolute_form
from devtunnel.agent.config import TunnelConfig
from tests.net.head_fixtures import FORGED, Seen, recording_service, relay_with_tunnels
from tests.net.tunnel_fixtures import parse_response

_PATH_OR_STAR = re.compile(rb"/[\x21-\x7e\x80-\xff]*")


@dataclass
class World:
    relay_port: int
    preserve: Seen  # tunnel "victim", Host preserved
    rewrite: Seen  # tunnel "rewritten", Host rewritten to the target's
    rewrite_port: int
    second_port: int
    second: Seen


@contextmanager
def world() -> Iterator[World]:
    with ExitStack() as stack:
        preserve_port, preserve = stack.enter_context(recording_service(b"victim"))
        rewrite_port, rewrite = stack.enter_context(recording_service(b"victim"))
        second_port, second = stack.enter_context(recording_service(b"SECRET"))
        relay_port = stack.enter_context(relay_with_tunnels([
            TunnelConfig(target=str(preserve_port), name="victim"),
            TunnelConfig(target=str(rewrite_port), name="rewritten", host_header="rewrite"),
        ]))
        yield World(relay_port, preserve, rewrite, rewrite_port, second_port, second)


def _targets(second_port: int) -> st.SearchStrategy[bytes]:
    prefixes = st.sampled_from([b"", b"/", b"//", b"*", b"*@", b"@", b"http://", b"https://", b"HTTP://", b"ws://",
                                b"\\\\", b"/..", b"?", b"#"])
    authorities = st.sampled_from([b"", b"127.0.0.1:%d" % second_port, b"localhost:%d" % second_port,
                                   b"[::1]:%d" % second_port, b"victim.localhost", b"user:pw@127.0.0.1:%d" % second_port])
    rest = st.text(alphabet="/abc%20?=&#@*:.-_~!$'()+,;\\ \t\x00\r\n\u00e9", max_size=12).map(lambda t: t.encode())
    paths = st.text(alphabet="/abc%20?=&#@*:.-_~!$'()+,;\u00e9", max_size=16).map(lambda t: b"/" + t.encode())
    return st.one_of(paths, st.tuples(prefixes, authorities, rest).map(b"".join), st.binary(max_size=24))


_METHODS = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"HEAD", b"PATCH", b"CONNECT",
                            b"PROPFIND", b"get", b"G\tET"])
_EXTRA_HEADERS = st.lists(
    st.sampled_from([
        (b"Host", b"admin.internal"),
        (b"host", b"127.0.0.1"),
        (b"X-Forwarded-Host", b"admin.internal"),
        (b"Authorization", b"Bearer forged"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"Sec-WebSocket-Version", b"13"),
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"h2c"),
        (b"X-Weird", b"\x80\xff"),
    ]),
    max_size=4,
)


def _request(method: bytes, target: bytes, host: bytes | None, extra: list[tuple[bytes, bytes]], body: bytes | None,
             trailers: bool) -> bytes:
    headers = ([(b"Host", host)] if host is not None else []) + extra
    chunked = any(n == b"Transfer-Encoding" for n, _ in extra)
    if body is not None and not chunked:
        headers.append((b"Content-Length", b"%d" % len(body)))
    headers.append((b"Connection", b"close"))  # after any other Connection header: nothing is kept alive
    out = [method, b" ", target, b" HTTP/1.1\r\n", *(n + b": " + v + b"\r\n" for n, v in headers), b"\r\n"]
    if chunked:
        data = body or b""
        out += [b"%x\r\n%s\r\n" % (len(data), data)] if data else []
        out.append(b"0\r\n")
        if trailers:
            out.append(b"Host: admin.internal\r\nAuthorization: Bearer forged\r\n")
        out.append(b"\r\n")
    elif body:
        out.append(body)
    return b"".join(out)


def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the relay closes (every request here ends its connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
        except ConnectionError:
            pass  # refused before it was all sent: the answer is still there to read
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_local_services_only_ever_see_a_path_and_the_expected_host() -> None:
    with world() as w:
        victim_host = b"victim.localhost:%d" % w.relay_port
        rewritten_host = b"rewritten.localhost:%d" % w.relay_port
        tunnels = [victim_host, rewritten_host, b"VICTIM.localhost:%d" % w.relay_port]

        @settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
        # Three plain requests reach each tunnel's service whatever the random ones do, so the check
        # below that both services were reached does not depend on the draw.
        @example(b"GET", b"/hooks?x=1", victim_host, [], None, False)
        @example(b"GET", b"/a", victim_host, [], None, False)
        @example(b"POST", b"/b", victim_host, [], b"x", False)
        @example(b"GET", b"/c", rewritten_host, [], None, False)
        @example(b"PUT", b"/d", rewritten_host, [], b"y", False)
        @example(b"POST", b"/hooks", rewritten_host, [(b"Transfer-Encoding", b"chunked")], b"{}", True)
        @example(b"GET", b"*@127.0.0.1:%d/internal-admin?secret=1" % w.second_port, victim_host,
                 [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"), (b"Sec-WebSocket-Version", b"13"),
                  (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ==")], None, False)
        @given(
            method=_METHODS,
            target=_targets(w.second_port),
            host=st.sampled_from(tunnels + [rewritten_host, None]),
            extra=_EXTRA_HEADERS,
            body=st.none() | st.binary(max_size=16),
            trailers=st.booleans(),
        )
        def check(method: bytes, target: bytes, host: bytes | None, extra: list[tuple[bytes, bytes]],
                  body: bytes | None, trailers: bool) -> None:
            before = {name: len(seen.snapshot()[1]) for name, seen in (("p", w.preserve), ("r", w.rewrite))}
            raw = _exchange(w.relay_port, _request(method, target, host, extra, body, trailers))
            status, _, answer = parse_response(raw)
            # An absolute-form target's authority is the Host that routes it, and that the
            # service gets (RFC 9112 3.2.2).
            read = absolute_form(target)
            routed_by = read[0] if isinstance(read, tuple) else host
            forwarded = status == 200 and answer == (b"" if method == b"HEAD" else b"victim")
            relays_own_page = status == 200 and routed_by not in tunnels and b"SECRET" not in raw
            carried_not = status == 501 and b"does not carry this request method" in answer  # b"get"
            assert forwarded or relays_own_page or carried_not or 400 <= status < 500, (status, raw[:300])
            for name, seen, expected_host in (
                ("p", w.preserve, routed_by),
                ("r", w.rewrite, b"127.0.0.1:%d" % w.rewrite_port),
            ):
                for request in seen.snapshot()[1][before[name]:]:
                    assert _PATH_OR_STAR.fullmatch(request.target) or (request.method, request.target) == (b"OPTIONS", b"*"), request
                    assert request.header(b"host") == [expected_host], request
                    for forged in FORGED:
                        if all(forged not in v for _, v in extra):  # else the client sent it as a header
                            assert all(forged not in v for _, v in request.headers), request
            assert w.second.snapshot()[0] == 0, "the second service got a connection"

        check()
        # The examples reached both tunnels' services, not only the relay's refusals.
        assert len(w.preserve.snapshot()[1]) >= 3 and len(w.rewrite.snapshot()[1]) >= 3, (
            len(w.preserve.snapshot()[1]), len(w.rewrite.snapshot()[1]))
        # Still serving after all that.
        status, _, answer = parse_response(_exchange(w.relay_port, _request(b"GET", b"/end", victim_host, [], None, False)))
        assert (status, answer) == (200, b"victim")
