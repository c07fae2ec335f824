"""An answer a local service sends before it read the request body (a 401 or 413 to the head of
an upload, as webhook receivers and frameworks send it) reaches a client that is still sending
that body, through a real relay and agent, as it does from the service directly.

The relay reads and drops what the client still sends after such an answer, as nginx does
(lingering close): closed at once, the connection would be reset by the client's next bytes,
and the reset makes the client's system drop the answer (Python's http.client, requests and
many others send the whole body before they read). What it reads so is bounded in bytes and in
time (``HeadLimitedHttpProtocol.linger_*``).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.relay.http import HeadLimitedHttpProtocol
from tests.net.tunnel_fixtures import RawHandler, raw_server, relay_and_agent

SIZE = 30 << 20  # an upload much larger than every socket buffer on the way
ANSWER = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n"


def _service(after: str) -> RawHandler:
    """A local service answering 401 to the head of a POST, the body unread; then it closes
    (``after="close"``, which resets the agent's connection) or reads and drops the rest
    (``"drain"``, as a framework does); a GET gets 200."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
                await writer.drain()
                continue
            writer.write(ANSWER + (b"Connection: close\r\n" if after == "close" else b"") + b"\r\nunauthorized")
            await writer.drain()
            if after == "close":
                writer.close()
                return
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while length:
                data = await reader.read(min(length, 1 << 16))
                if not data:  # the agent stopped sending the body (it closed the connection)
                    writer.close()
                    return
                length -= len(data)
            if b"\r\nconnection: close\r\n" in head.lower():
                writer.close()
                return

    return handle


class Upload:
    """A client that sends a request and its whole body before it reads (as http.client and
    requests do), on a blocking socket; what it read and how the connection ended."""

    def __init__(self, port: int, host: str, size: int = SIZE, *, close: bool = True, then: bytes = b"",
                 pace: float = 0.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.head = b"POST /hook HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            host.encode(), size, b"Connection: close\r\n" if close else b"")
        self.size = size
        self.then = then  # sent once the body went whole (a next request on the connection)
        self.pace = pace  # seconds between 64 KiB writes
        self.sent = 0
        self.send_error: OSError | None = None
        self.read = b""
        self.read_error: OSError | None = None
        self.ended_at = 0.0

    def run(self) -> Upload:
        with self.sock:
            try:
                self.sock.sendall(self.head)
                chunk = b"u" * 65536
                while self.sent < self.size:
                    self.sock.sendall(chunk[:self.size - self.sent])
                    self.sent += min(len(chunk), self.size - self.sent)
                    if self.pace:
                        time.sleep(self.pace)
                if self.then:
                    self.sock.sendall(self.then)
            except OSError as exc:
                self.send_error = exc
            got = bytearray()
            try:
                while data := self.sock.recv(65536):
                    got += data
            except OSError as exc:
                self.read_error = exc
            self.read = bytes(got)
            self.ended_at = time.monotonic()
        return self


@pytest.fixture
def bounds() -> Iterator[type[HeadLimitedHttpProtocol]]:
    """The relay's bounds on reading after an answer, put back afterwards (the tests lower them)."""
    saved = (HeadLimitedHttpProtocol.linger_bytes, HeadLimitedHttpProtocol.linger_time,
             HeadLimitedHttpProtocol.linger_quiet)
    yield HeadLimitedHttpProtocol
    (HeadLimitedHttpProtocol.linger_bytes, HeadLimitedHttpProtocol.linger_time,
     HeadLimitedHttpProtocol.linger_quiet) = saved


@pytest.mark.parametrize("after", ["close", "drain"])
async def test_an_early_answer_reaches_a_client_that_sends_its_whole_upload_before_reading(
    tmp_path: Path, after: str
) -> None:
    with raw_server(_service(after)) as port:
        if after == "drain":  # straight to the service, the client gets its answer
            direct = await asyncio.to_thread(Upload(port, "localhost").run)
            assert direct.read.endswith(b"unauthorized"), (direct.read[:200], direct.send_error, direct.read_error)
        async with relay_and_agent(tmp_path) as harness:
            await harness.start(str(port))
            through = await asyncio.to_thread(Upload(harness.relay.port, harness.host("app")).run)
            assert through.read.startswith(b"HTTP/1.1 401 Unauthorized\r\n"), (
                through.read[:200], through.send_error, through.read_error)
            assert through.read.endswith(b"\r\n\r\nunauthorized"), through.read[:300]
            assert (through.send_error, through.read_error) == (None, None), "the relay reset the connection"
            assert through.sent == SIZE
            [record] = await harness.exchanges(1)
    assert record.response is not None and (record.response.status, record.response.body) == (401, b"unauthorized")
    assert record.error is None and record.request.body_truncated


async def test_after_an_early_answer_a_kept_alive_connection_serves_the_next_request(tmp_path: Path) -> None:
    with raw_server(_service("drain")) as port:
        async with relay_and_agent(tmp_path) as harness:
            await harness.start(str(port))
            host = harness.host("app")
            then = b"GET /next HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode()
            through = await asyncio.to_thread(Upload(harness.relay.port, host, close=False, then=then).run)
    assert (through.send_error, through.read_error) == (None, None)
    first, _, second = through.read.partition(b"unauthorized")
    assert first.startswith(b"HTTP/1.1 401 ") and second.startswith(b"HTTP/1.1 200 ") and second.endswith(b"next"), (
        through.read)


async def test_curl_gets_an_early_answer_to_a_large_upload_intact(tmp_path: Path) -> None:
    body = tmp_path / "upload.bin"
    body.write_bytes(b"u" * SIZE)
    with raw_server(_service("close")) as port:
        async with relay_and_agent(tmp_path) as harness:
            await harness.start(str(port))
            for extra in ([], ["-H", "Connection: close"]):
                process = await asyncio.create_subprocess_exec(
                    "curl", "-sS", "-i", "--max-time", "20", "-H", "Expect:", *extra, "--data-binary", f"@{body}",
                    f"http://{harness.host('app')}/hook", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, err = await process.communicate()
                assert process.returncode == 0, err.decode()
                assert out.startswith(b"HTTP/1.1 401 Unauthorized\r\n") and out.endswith(b"\r\n\r\nunauthorized"), out


@pytest.mark.parametrize("close", [True, False], ids=["close", "keep-alive"])
async def test_what_the_relay_reads_after_an_answer_is_bounded_in_bytes(
    tmp_path: Path, bounds: type[HeadLimitedHttpProtocol], close: bool
) -> None:
    bounds.linger_bytes = 1 << 20
    with raw_server(_service("drain")) as port:
        async with relay_and_agent(tmp_path) as harness:
            await harness.start(str(port))
            started = time.monotonic()
            through = await asyncio.to_thread(Upload(harness.relay.port, harness.host("app"), close=close).run)
    # Closed once a MiB more was read: the client could not send its 30 MiB (what the socket
    # buffers on the way hold, a few MiB, went further), nor wait for the time bound.
    assert through.send_error is not None and through.sent < SIZE // 2, (through.sent, through.send_error)
    assert through.ended_at - started < bounds.linger_time


@pytest.mark.parametrize("close", [True, False], ids=["close", "keep-alive"])
async def test_what_the_relay_reads_after_an_answer_is_bounded_in_time(
    tmp_path: Path, bounds: type[HeadLimitedHttpProtocol], close: bool
) -> None:
    # A client sending slowly and without end: 64 KiB every 20 ms, for up to 30 MiB.
    bounds.linger_time = 1.0
    with raw_server(_service("drain")) as port:
        async with relay_and_agent(tmp_path) as harness:
            await harness.start(str(port))
            upload = Upload(harness.relay.port, harness.host("app"), close=close, pace=0.02)
            started = time.monotonic()
            through = await asyncio.to_thread(upload.run)
    assert through.send_error is not None and through.sent < SIZE, through.sent
    assert through.ended_at - started < 4.0, "the relay read past its time bound"


async def test_a_client_that_stops_sending_after_the_answer_is_closed_after_the_quiet_bound(
    tmp_path: Path, bounds: type[HeadLimitedHttpProtocol]
) -> None:
    bounds.linger_quiet = 0.5
    with raw_server(_service("drain")) as port:
        async with relay_and_agent(tmp_path) as harness:
            await harness.start(str(port))
            reader, writer = await asyncio.open_connection("127.0.0.1", harness.relay.port)
            try:
                writer.write(b"POST /hook HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000000\r\n\r\n"
                             % harness.host("app").encode() + b"u" * 1000)
                async with asyncio.timeout(5):
                    got = await reader.read(-1)  # the answer, then the relay's close
            finally:
                writer.close()
    assert got.startswith(b"HTTP/1.1 401 ") and got.endswith(b"unauthorized"), got


async def test_the_relays_own_413_reaches_a_client_sending_a_body_over_its_limit(tmp_path: Path) -> None:
    with raw_server(_service("drain")) as port:
        async with relay_and_agent(tmp_path, max_body=1 << 20) as harness:
            await harness.start(str(port))
            through = await asyncio.to_thread(Upload(harness.relay.port, harness.host("app")).run)
    assert through.read.startswith(b"HTTP/1.1 413 "), (through.read[:200], through.send_error, through.read_error)
    assert b"larger than the relay's limit" in through.read
    assert (through.send_error, through.read_error) == (None, None)


