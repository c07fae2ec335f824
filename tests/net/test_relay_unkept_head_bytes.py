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
from collections.abc import AsyncIterator

import pytest

from devtunnel.relay.server import Relay
from devtunnel.values.sizes import format_size
from tests.net._relay_agent import running_relay

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
