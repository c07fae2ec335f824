"""Bytes of a request head that llhttp skips without keeping count toward the relay's head bound.

llhttp lets spaces repeat between a request line's parts and skips blank lines (CR, LF) before
a request, keeping none of them; the relay used to count only what the parser reported, so a
client could send them without end and only the head timeout stopped it. Every byte received
while a head is incomplete counts now: past ``max_head`` the client gets the 431 an oversized
head gets. A connection that sends only blank lines and then nothing is an idle one: closed
silently at the head timeout, as one that sent nothing.

The relay here waits 60 s for a head, and the tests wait at most 10 s for an answer: an answer
within that can only come from the bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from devtunnel.relay.server import Relay
from devtunnel.values.sizes import format_size
from tests.net._relay_agent import running_relay
from tests.net.test_relay_pipelined_heads import PlannedReads, planned_reads

LIMIT = 64 * 1024
REFUSAL = b"request head larger than %s\n" % format_size(LIMIT).encode()


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with running_relay(head_timeout=60, max_head=LIMIT) as relay:
        yield relay


async def _trickle(port: int, start: bytes, filler: bytes, total: int, before: bytes = b"") -> bytes:
    """Connect, send ``before``, then ``start`` and ``filler`` in writes of 1 KiB until ``total``
    bytes of them are sent or the relay closes; return all it answers (within 10 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(before + start)
        sent = len(start)
        while filler and sent < total and not reader.at_eof():
            writer.write(filler * (1024 // len(filler)))
            sent += 1024
            try:
                await writer.drain()
            except ConnectionError:
                break  # refused while sending: the answer is still there to read
        return await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()


def _status_and_body(raw: bytes) -> tuple[bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


@pytest.mark.parametrize("start", [b"GET", b"GET /x"], ids=["after-the-method", "after-the-target"])
async def test_a_request_line_padded_with_spaces_past_the_bound_gets_431(relay: Relay, start: bytes) -> None:
    raw = await _trickle(relay.port, start, b" ", LIMIT + 4096)
    assert _status_and_body(raw) == (b"HTTP/1.1 431 Request Header Fields Too Large", REFUSAL)


async def test_a_request_line_padded_with_spaces_in_one_write_gets_431(relay: Relay) -> None:
    """Read as the kernel delivers it; the version after the spaces never comes."""
    raw = await _trickle(relay.port, b"GET /x" + b" " * (LIMIT + 4096) + b"HTTP/1.", b"", 0)
    assert _status_and_body(raw) == (b"HTTP/1.1 431 Request Header Fields Too Large", REFUSAL)


async def test_spaces_before_a_field_value_count_too(relay: Relay) -> None:
    raw = await _trickle(relay.port, b"GET /x HTTP/1.1\r\nHost: demo.localhost\r\nX-Pad:", b" ", LIMIT + 4096)
    assert _status_and_body(raw) == (b"HTTP/1.1 431 Request Header Fields Too Large", REFUSAL)


async def test_a_request_line_with_spaces_behind_a_pipelined_request_gets_its_answer_then_431(relay: Relay) -> None:
    """The first request is answered (404: no tunnel), then the spaces of the second count."""
    first = b"GET /first HTTP/1.1\r\nHost: nothing.localhost\r\n\r\n"
    raw = await _trickle(relay.port, b"GET", b" ", LIMIT + 4096, before=first)
    assert raw.startswith(b"HTTP/1.1 404 ")
    assert raw.endswith(REFUSAL) and raw.count(b"HTTP/1.1 431 ") == 1


async def test_blank_lines_without_end_get_431(relay: Relay) -> None:
    raw = await _trickle(relay.port, b"\r\n", b"\r\n", LIMIT + 4096)
    assert _status_and_body(raw) == (b"HTTP/1.1 431 Request Header Fields Too Large", REFUSAL)


async def test_blank_lines_without_end_after_a_response_get_431(relay: Relay) -> None:
    first = b"GET /first HTTP/1.1\r\nHost: nothing.localhost\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(first)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 404 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await asyncio.wait_for(reader.readexactly(length), 10)
        sent = 0
        while sent < LIMIT + 4096 and not reader.at_eof():
            writer.write(b"\r\n" * 512)
            sent += 1024
            try:
                await writer.drain()
            except ConnectionError:
                break
        raw = await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()
    assert _status_and_body(raw) == (b"HTTP/1.1 431 Request Header Fields Too Large", REFUSAL)


async def test_blank_lines_before_a_request_are_skipped() -> None:
    """As nginx does: a few blank lines, then a request, get the request's answer."""
    async with running_relay(head_timeout=60) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        try:
            writer.write(b"\r\n\r\n\n")
            await writer.drain()
            writer.write(b"\r\nGET / HTTP/1.1\r\nHost: nothing.localhost\r\nConnection: close\r\n\r\n")
            raw = await asyncio.wait_for(reader.read(-1), 10)
        finally:
            writer.close()
        assert raw.startswith(b"HTTP/1.1 404 ")


@pytest.mark.parametrize("sent", [b"", b"\r\n\r\n", b"GET / HTTP/1.1\r\nHost: demo.local"],
                         ids=["nothing", "blank-lines", "a-partial-head"])
async def test_at_the_head_timeout_only_a_begun_head_gets_408(sent: bytes) -> None:
    """A connection that never began a request is idle: closed without an answer."""
    async with running_relay(head_timeout=0.3) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        try:
            writer.write(sent)
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(-1), 10)
        finally:
            writer.close()
        if sent.startswith(b"GET"):
            assert raw.startswith(b"HTTP/1.1 408 ")
        else:
            assert raw == b""


# -- a head that ends in the read it came in, and blank lines read with a request's end ----------------
# These bytes reach the relay in one read whatever segments the kernel cuts them into
# (PlannedReads hands the relay's protocol the reads planned for a connection): llhttp then
# reports the head whole, and the count must still take in what it skipped.
NO_TUNNEL = b"Host: nothing.localhost\r\n"


@pytest.fixture
def reads() -> Iterator[PlannedReads]:
    with planned_reads() as plans:
        yield plans


async def _in_reads(port: int, reads: PlannedReads, writes: list[bytes], *, answers_between: int = 0) -> bytes:
    """Send each of ``writes`` to arrive in a read of its own, the first ``answers_between`` of
    them waiting for a response first; return all the relay answers until it closes (10 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        me = writer.get_extra_info("sockname")[1]
        ends, total = [], 0
        for data in writes:
            total += len(data)
            ends.append(total)
        reads.plan(me, ends)
        got = b""
        for i, data in enumerate(writes):
            writer.write(data)
            try:
                await writer.drain()
            except ConnectionError:
                break
            if i < answers_between:
                got += await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = int(got.lower().rsplit(b"content-length: ", 1)[1].split(b"\r\n")[0])
                got += await asyncio.wait_for(reader.readexactly(length), 10)
        return got + await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()
        reads.forget(me)


def spaced_head(size: int, where: str, host: bytes = b"nothing.localhost") -> bytes:
    """A whole GET head of exactly ``size`` bytes, padded with spaces llhttp skips at ``where``."""
    line, version = b"GET /x", b" HTTP/1.1\r\n"
    fields = b"Host: %s\r\nConnection: close\r\n" % host
    pad = size - len(line + version + fields + b"X-Pad: v\r\n\r\n")
    if where == "request-line":
        return line + b" " * pad + version + fields + b"X-Pad: v\r\n\r\n"
    return line + version + fields + b"X-Pad:" + b" " * (pad + 1) + b"v\r\n\r\n"


@pytest.mark.parametrize("where", ["request-line", "before-a-value"])
async def test_a_whole_head_in_one_read_counts_the_spaces_the_parser_skips(
    relay: Relay, reads: PlannedReads, where: str
) -> None:
    """Exactly the bound is answered (404: no tunnel); one byte more, every byte counted, is 431."""
    at_bound = await _in_reads(relay.port, reads, [spaced_head(LIMIT, where)])
    assert _status_and_body(at_bound)[0] == b"HTTP/1.1 404 Not Found"
    over = await _in_reads(relay.port, reads, [spaced_head(LIMIT + 1, where)])
    assert _status_and_body(over) == (b"HTTP/1.1 431 Request Header Fields Too Large", REFUSAL)


async def test_blank_lines_read_with_the_end_of_a_request_count_toward_the_bound(
    relay: Relay, reads: PlannedReads
) -> None:
    """Half the bound in blank lines in the request's read, half and a few more in later reads: 431."""
    first = b"GET /first HTTP/1.1\r\n%s\r\n" % NO_TUNNEL
    half = b"\r\n" * (LIMIT // 4)
    raw = await _in_reads(relay.port, reads, [first + half, half, b"\r\n" * 8], answers_between=1)
    assert raw.startswith(b"HTTP/1.1 404 ")
    assert raw.endswith(REFUSAL) and raw.count(b"HTTP/1.1 431 ") == 1
