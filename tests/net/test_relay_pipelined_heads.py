"""Pipelined requests through a real relay and agent on loopback, their bytes cut into the
relay's reads at chosen points.

The relay bounds a request head (``max_head``, 64 KiB by default). Only the bytes of the head
count: a client that sends, in one write, a POST with a body larger than the bound and a small
GET behind it gets two answers, whichever read the GET's head begins in and however much of the
POST's body that read holds. A head over the bound gets 431 however its bytes are cut, behind a
pipelined POST or alone; 414 when its request line alone is over the bound (a target too long).

The client writes each request sequence in one ``sendall``; a spy on the relay protocol's
``data_received`` (``PlannedReads``) hands it the bytes in exactly the reads a test asks for,
whatever segments the kernel delivered them in, so a cut is a boundary between two reads.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import httptools
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devtunnel.agent.config import TunnelConfig
from devtunnel.relay.http import HeadLimitedHttpProtocol
from tests.net.head_fixtures import Seen, recording_service, relay_with_tunnels

LIMIT = 64 * 1024  # the relay's max_head (its default)
BODY = bytes(range(256)) * 400  # 100 KiB, every byte value, newlines included


class PlannedReads:
    """Hands the relay's HTTP protocol the bytes of a client connection in the reads planned for
    it (by the client's port), while this lasts; other connections read as the kernel delivers."""

    def __init__(self) -> None:
        self._plans: dict[int, tuple[list[int], bytearray, list[int]]] = {}
        self._lock = threading.Lock()

    def plan(self, port: int, ends: list[int]) -> None:
        """Give the connection from ``port`` reads ending at these offsets (the last: its last byte)."""
        with self._lock:
            self._plans[port] = (list(ends), bytearray(), [0])

    def forget(self, port: int) -> None:
        with self._lock:
            self._plans.pop(port, None)

    def pieces(self, port: int, data: bytes) -> list[bytes] | None:
        """The planned reads ``data`` completes (None: no plan for ``port``)."""
        with self._lock:
            plan = self._plans.get(port)
            if plan is None:
                return None
            ends, held, delivered = plan
            held += data
            out = []
            while ends and delivered[0] + len(held) >= ends[0]:
                size = ends.pop(0) - delivered[0]
                out.append(bytes(held[:size]))
                del held[:size]
                delivered[0] += size
            if not ends and held:  # more than was planned: as it came
                out.append(bytes(held))
                held.clear()
            return out


@contextmanager
def planned_reads() -> Iterator[PlannedReads]:
    plans = PlannedReads()
    original = HeadLimitedHttpProtocol.data_received

    def spy(self: HeadLimitedHttpProtocol, data: bytes) -> None:
        pieces = plans.pieces(self.client[1] if self.client else 0, data)
        for piece in [data] if pieces is None else pieces:
            original(self, piece)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HeadLimitedHttpProtocol, "data_received", spy)
        yield plans


@dataclass
class World:
    port: int
    host: bytes
    seen: Seen
    reads: PlannedReads


@contextmanager
def world() -> Iterator[World]:
    with ExitStack() as stack:
        service_port, seen = stack.enter_context(recording_service())
        reads = stack.enter_context(planned_reads())
        port = stack.enter_context(relay_with_tunnels([TunnelConfig(target=str(service_port), name="victim")],
                                                      max_head=LIMIT))
        yield World(port, b"victim.localhost:%d" % port, seen, reads)


@pytest.fixture(scope="module")
def w() -> Iterator[World]:
    with world() as w:
        yield w


def post(host: bytes, body: bytes, chunked: bool) -> bytes:
    if chunked:  # in 3 chunks, one of them with an extension
        third = len(body) // 3
        parts = [body[:third], body[third:2 * third], body[2 * third:]]
        framed = b"".join(b"%x%s\r\n%s\r\n" % (len(p), b";n=%d" % i if i == 1 else b"", p) for i, p in enumerate(parts))
        return b"POST /upload HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n" % (host, framed)
    return b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s" % (host, len(body), body)


def get(host: bytes, extra: bytes = b"") -> bytes:
    return b"GET /after HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\n%sConnection: close\r\n\r\n" % (host, extra)


def statuses(raw: bytes) -> list[int]:
    """The status of every response in ``raw`` (read to connection close), in order."""
    done: list[int] = []

    class P:
        def on_message_complete(self) -> None:
            done.append(parser.get_status_code())

    parser = httptools.HttpResponseParser(P())
    parser.feed_data(raw)
    return done


def exchange(w: World, data: bytes, cuts: list[int] | None = None) -> bytes:
    """Send ``data`` to the relay in one write, to be read in reads cut at ``cuts`` (None: as the
    kernel delivers it); read what comes back until the relay closes the connection."""
    with socket.create_connection(("127.0.0.1", w.port), timeout=10) as sock:
        me = sock.getsockname()[1]
        if cuts is None:
            w.reads.forget(me)
        else:
            w.reads.plan(me, [*cuts, len(data)])
        try:
            sock.sendall(data)
        except ConnectionError:
            pass  # refused before it was all sent: the answer is still there to read
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        w.reads.forget(me)
    return b"".join(chunks)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_post_over_the_head_bound_and_a_get_in_one_write_get_two_answers(w: World, chunked: bool) -> None:
    before = len(w.seen.snapshot()[1])
    raw = exchange(w, post(w.host, BODY, chunked) + get(w.host))
    assert statuses(raw) == [200, 200]
    got = w.seen.snapshot()[1][before:]
    assert [(r.method, r.target) for r in got] == [(b"POST", b"/upload"), (b"GET", b"/after")]
    assert got[0].body == BODY


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("into_get", [1, 4, 10, 20, 40, -30, -3, -1])
def test_a_get_whose_head_begins_in_a_read_with_the_posts_body_is_answered(w: World, chunked: bool,
                                                                           into_get: int) -> None:
    """The read that ends inside the GET's head holds all of the POST (head and 100 KiB body):
    a read of more than the head bound, of which the GET's head is a few bytes."""
    first = post(w.host, BODY, chunked)
    second = get(w.host)
    before = len(w.seen.snapshot()[1])
    raw = exchange(w, first + second, [len(first) + into_get % len(second)])
    assert statuses(raw) == [200, 200]
    got = w.seen.snapshot()[1][before:]
    assert [r.method for r in got] == [b"POST", b"GET"]
    assert got[0].body == BODY


def cuts_in(size: int, near: list[int]) -> st.SearchStrategy[list[int]]:
    """Up to 5 points to cut ``size`` bytes at: anywhere, or within 40 bytes of one of ``near``."""
    anywhere = st.integers(1, size - 1)
    close = st.tuples(st.sampled_from(near), st.integers(-40, 40)).map(lambda t: min(max(t[0] + t[1], 1), size - 1))
    return st.lists(anywhere | close, max_size=5).map(lambda cs: sorted(set(cs)))


_EXTRA = st.sampled_from([b"", b"X-Pad: %s\r\n" % (b"p" * 1000), b"X-Pad: %s\r\n" % (b"p" * (LIMIT - 200)),
                          b"X-Pad:%sp\r\n" % (b" " * (LIMIT - 300))])  # (spaces llhttp skips: within the bound still)


def test_pipelined_heads_within_the_bound_are_answered_however_they_are_read(w: World) -> None:
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(chunked=st.booleans(), extra=_EXTRA, gap=st.sampled_from([b"", b"\r\n" * 40]), data=st.data())
    def check(chunked: bool, extra: bytes, gap: bytes, data: st.DataObject) -> None:
        first = post(w.host, BODY, chunked)
        second = gap + get(w.host, extra)  # (blank lines before it count toward its head)
        request = first + second
        cuts = data.draw(cuts_in(len(request), [len(first), len(request)]), label="cuts")
        before = len(w.seen.snapshot()[1])
        assert statuses(exchange(w, request, cuts)) == [200, 200]
        got = w.seen.snapshot()[1][before:]
        assert [r.method for r in got] == [b"POST", b"GET"]
        assert got[0].body == BODY

    check()


def oversized(host: bytes, form: str) -> bytes:
    """A GET whose head is over the bound by a few bytes, in one of several shapes."""
    over = LIMIT + 16
    if form == "one-field":
        return get(host, b"X-Big: %s\r\n" % (b"z" * over))
    if form == "many-fields":
        return get(host, b"".join(b"X-F%04d: %s\r\n" % (i, b"v" * 1000) for i in range(over // 1000 + 1)))
    if form == "target":
        return b"GET /%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (b"t" * over, host)
    # The client sends these and waits: the head never ends.
    if form == "spaces-after-method":  # llhttp skips them, keeping none: every byte counts still
        return b"GET" + b" " * over
    if form == "spaces-after-target":
        return b"GET /after" + b" " * over
    if form == "spaced-request-line":  # whole: llhttp reports it complete, every byte counts still
        return b"GET /after" + b" " * over + b"HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host
    if form == "spaced-field":
        return get(host, b"X-Pad:%sv\r\n" % (b" " * over))
    if form == "blank-lines-before":
        return b"\r\n" * (over // 2) + get(host)
    assert form == "unfinished-field"
    return b"GET /after HTTP/1.1\r\nHost: %s\r\nX-Big: %s" % (host, b"z" * over)


_FORMS = ["one-field", "many-fields", "target", "unfinished-field", "spaces-after-method", "spaces-after-target",
          "spaced-request-line", "spaced-field", "blank-lines-before"]


def test_a_head_over_the_bound_gets_431_or_414_however_it_is_read(w: World) -> None:
    @settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(form=st.sampled_from(_FORMS), behind_post=st.booleans(), data=st.data())
    @example(form="unfinished-field", behind_post=False, data=None)
    @example(form="unfinished-field", behind_post=True, data=None)
    @example(form="spaces-after-target", behind_post=True, data=None)
    @example(form="spaces-after-method", behind_post=True, data=None)
    @example(form="spaced-request-line", behind_post=True, data=None)
    @example(form="spaced-field", behind_post=False, data=None)
    @example(form="blank-lines-before", behind_post=True, data=None)
    @example(form="target", behind_post=False, data=None)
    @example(form="target", behind_post=True, data=None)
    def check(form: str, behind_post: bool, data: st.DataObject | None) -> None:
        first = post(w.host, BODY, chunked=False) if behind_post else b""
        request = first + oversized(w.host, form)
        near = [len(first), len(first) + 60, len(request) - LIMIT, len(request) - 20, len(request)]
        cuts = data.draw(cuts_in(len(request), near), label="cuts") if data is not None else []
        before = len(w.seen.snapshot()[1])
        raw = exchange(w, request, cuts)
        # Behind the POST, its whole answer comes first; then the 431 (414 for the target) if
        # that answer was sent when the head passed the bound, or else only the close (a 431 then
        # would have landed inside the answer).
        refusal = 414 if form == "target" else 431
        assert statuses(raw) in ([200, refusal], [200]) if behind_post else statuses(raw) == [refusal]
        assert [r.method for r in w.seen.snapshot()[1][before:]] == ([b"POST"] if behind_post else [])

    check()


@pytest.mark.parametrize("cut", ["none", "in-the-body", "after-the-last-data"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_whole_spaced_head_read_with_a_posts_end_counts_from_that_end(w: World, chunked: bool, cut: str) -> None:
    """The GET's head, spaces llhttp skips in its request line, comes whole in the read that
    ends the POST (all of it, or its body's end): counted from the POST's end, blank lines
    after it included, and every byte of it. One byte over the bound: the POST is answered,
    the GET never forwarded."""
    from tests.net.test_relay_unkept_head_bytes import spaced_head

    first = post(w.host, BODY, chunked)
    cuts = {"none": [], "in-the-body": [len(first) - 5000],
            "after-the-last-data": [len(first) - len(b"\r\n0\r\n\r\n" if chunked else b"")]}[cut]
    before = len(w.seen.snapshot()[1])
    raw = exchange(w, first + b"\r\n" + spaced_head(LIMIT - 1, "request-line", w.host), cuts)
    assert statuses(raw) in ([200, 431], [200])
    assert [r.method for r in w.seen.snapshot()[1][before:]] == [b"POST"]
    # At the bound, without the blank line: both answered.
    before = len(w.seen.snapshot()[1])
    raw = exchange(w, first + spaced_head(LIMIT, "request-line", w.host), cuts)
    assert statuses(raw) == [200, 200]
    assert [(r.method, r.target) for r in w.seen.snapshot()[1][before:]] == [(b"POST", b"/upload"), (b"GET", b"/x")]
