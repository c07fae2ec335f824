"""Chunked uploads through a real relay and agent on loopback, their bytes cut into the relay's
reads at random points.

The relay bounds a chunked body's trailer section like a head (``max_head``, here 1 KiB). Only
the trailer's bytes count, whatever a read holds besides (the head, body bytes, chunk size lines
with or without extensions): an upload of hundreds of one-byte chunks, whose framing alone is
over the bound, with a trailer up to the bound, reaches the local service whole however it is
cut, all in one read included; a trailer over the bound drops the connection however it is cut,
whether the client ends it or sends it and waits for an answer.

Each piece is written once the relay has read and parsed the one before (``head_fixtures.Reads``),
so every cut is a boundary between two reads.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtunnel.agent.config import TunnelConfig
from tests.net.head_fixtures import Reads, Seen, reads_spied, recording_service, relay_with_tunnels
from tests.net.tunnel_fixtures import parse_response

LIMIT = 1024  # the relay's max_head, and so its bound on a trailer section
# Chunk extensions llhttp accepts (a quoted value may hold a colon, as a field line does).
EXTENSIONS = [b"", b";a", b";a=b", b';name="x:y; z"', b";sig=0123456789abcdef;alg=hs256"]
SIZE_FORMATS = [b"%x", b"%X", b"%03x"]


@dataclass
class World:
    port: int
    seen: Seen
    reads: Reads


@contextmanager
def world() -> Iterator[World]:
    with ExitStack() as stack:
        service_port, seen = stack.enter_context(recording_service())
        reads = stack.enter_context(reads_spied())
        port = stack.enter_context(relay_with_tunnels([TunnelConfig(target=str(service_port), name="victim")],
                                                      max_head=LIMIT))
        yield World(port, seen, reads)


def trailer_fields(size: int, count: int) -> list[bytes]:
    """Up to ``count`` field lines of ``size`` bytes in all (at least 9), which is also what the
    relay counts for them: name, value and 4 (``": "`` and CRLF) each."""
    count = max(1, min(count, size // 9))
    lines = []
    for i in range(count):
        share = size // count + (size % count if i == count - 1 else 0)
        name = b"X-T%d" % i
        lines.append(name + b": " + b"v" * (share - len(name) - 4) + b"\r\n")
    return lines


def upload(host: bytes, body: bytes, extensions: list[bytes], size_format: bytes, fields: list[bytes],
           ended: bool) -> tuple[bytes, int]:
    """A chunked POST of ``body`` in one-byte chunks; returns it and where its trailer starts."""
    out = [b"POST /upload HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" % host]
    for i, byte in enumerate(body):
        out.append(size_format % 1 + extensions[i % len(extensions)] + b"\r\n" + bytes([byte]) + b"\r\n")
    out.append(b"0" + extensions[-1] + b"\r\n")
    start = sum(map(len, out))
    out += fields
    if ended:
        out.append(b"\r\n")
    return b"".join(out), start


def cuts_of(data: bytes, trailer_start: int) -> st.SearchStrategy[list[int]]:
    """Points to cut ``data`` at: anywhere, or near the end of the last chunk's size line, or
    near the end (inside the last field's CRLF or the empty line's)."""
    anywhere = st.integers(1, len(data) - 1)
    near_trailer = st.integers(-8, 8).map(lambda d: min(max(trailer_start + d, 1), len(data) - 1))
    near_end = st.integers(1, 5).map(lambda d: max(len(data) - d, 1))
    return st.lists(anywhere | near_trailer | near_end, max_size=6).map(lambda cs: sorted(set(cs)))


def exchange(w: World, data: bytes, cuts: list[int]) -> bytes:
    """Send ``data`` to the relay in reads cut at ``cuts``; read what comes back until the relay
    closes (an answered request here ends its connection) or resets the connection (b"")."""
    with socket.create_connection(("127.0.0.1", w.port), timeout=10) as sock:
        me = sock.getsockname()[1]
        w.reads.forget(me)
        bounds = [0, *cuts, len(data)]
        for begin, end in zip(bounds, bounds[1:]):
            try:
                sock.sendall(data[begin:end])
            except ConnectionError:
                break  # dropped
            if not w.reads.wait_read(me, end):
                break  # dropped after this read
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            return b""
    return b"".join(chunks)


_BODIES = st.binary(min_size=200, max_size=400)  # 200 one-byte chunks: over 1 KiB of framing alone
_EXTENSION_LISTS = st.lists(st.sampled_from(EXTENSIONS), min_size=1, max_size=4)


def test_a_chunked_upload_with_a_trailer_within_the_bound_reaches_the_service_whole_however_it_is_read() -> None:
    with world() as w:
        host = b"victim.localhost:%d" % w.port

        @settings(max_examples=75, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
        @given(body=_BODIES, extensions=_EXTENSION_LISTS, size_format=st.sampled_from(SIZE_FORMATS),
               trailer=st.integers(0, LIMIT) | st.just(LIMIT), count=st.integers(1, 3), data=st.data())
        def check(body: bytes, extensions: list[bytes], size_format: bytes, trailer: int, count: int,
                  data: st.DataObject) -> None:
            fields = trailer_fields(trailer, count) if trailer >= 9 else []
            request, trailer_start = upload(host, body, extensions, size_format, fields, ended=True)
            cuts = data.draw(cuts_of(request, trailer_start), label="cuts")
            before = len(w.seen.snapshot()[1])
            raw = exchange(w, request, cuts)
            assert raw, "the relay dropped a legal upload"
            assert parse_response(raw)[0] == 200
            [got] = w.seen.snapshot()[1][before:]
            assert got.body == body
            assert not any(name.startswith(b"X-T") for name, _ in got.headers)  # trailers are never headers

        check()


def test_a_trailer_over_the_bound_drops_the_connection_however_it_is_read() -> None:
    with world() as w:
        host = b"victim.localhost:%d" % w.port

        @settings(max_examples=75, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
        @given(body=_BODIES, extensions=_EXTENSION_LISTS, size_format=st.sampled_from(SIZE_FORMATS),
               trailer=st.integers(LIMIT + 1, 4 * LIMIT) | st.just(LIMIT + 1), count=st.integers(1, 3),
               ended=st.booleans(), data=st.data())
        def check(body: bytes, extensions: list[bytes], size_format: bytes, trailer: int, count: int, ended: bool,
                  data: st.DataObject) -> None:
            # Not ended: the client sends the whole trailer but not the empty line after it, and
            # waits for an answer (the read that would end it never comes).
            request, trailer_start = upload(host, body, extensions, size_format, trailer_fields(trailer, count), ended)
            cuts = data.draw(cuts_of(request, trailer_start), label="cuts")
            before = len(w.seen.snapshot()[1])
            assert exchange(w, request, cuts) == b""
            assert w.seen.snapshot()[1][before:] == []  # the request never ended

        check()


def test_trailer_fields_add_up_to_the_size_asked_for() -> None:
    for size in (9, 17, 100, LIMIT, LIMIT + 1, 4 * LIMIT):
        for count in (1, 2, 3):
            lines = trailer_fields(size, count)
            assert sum(map(len, lines)) == size, (size, count)
            assert all(line.count(b": ") == 1 and line.endswith(b"\r\n") for line in lines)
