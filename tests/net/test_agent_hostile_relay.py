"""A hostile relay cannot make the agent hold memory without bound, nor hang it.

A scripted relay (a real websockets server speaking the tunnel protocol with the protocol's own
encoder) welcomes a real ``AgentTunnel``, then misbehaves at the WebSocket level: a message that
never ends, a frame announcing more bytes than any batch, a relay that stops reading, request
bodies sent to a local service that does not read them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

import devtunnel.agent.local_ws as local_ws_module
import devtunnel.agent.session as session_module
import devtunnel.agent.socket as socket_module

from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.socket import MAX_FRAME
from devtunnel.agent.tunnel import AgentTunnel
from devtunnel.protocol import frames as f
from devtunnel.capture.model import Exchange
from devtunnel.export import export
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import DataReceived, ResponseReceived, StreamReset, WebSocketClosed
from devtunnel.protocol.relay_side import RelayConnection
from tests.helpers import async_wait_for
from tests.net.api_fixtures import echo_service
from tests.net.tunnel_fixtures import local_websocket, read_hello

RelayScript = Callable[[ServerConnection, RelayConnection], Awaitable[None]]


@asynccontextmanager
async def hostile_relay(
    script: RelayScript, *, target: str = "9", sink: Callable[[Exchange, bool], None] | None = None, **server: object
) -> AsyncIterator[AgentTunnel]:
    """An agent tunnel (to ``target``) connected to a relay that welcomes it, then runs ``script``."""

    async def relay(ws: ServerConnection) -> None:
        conn = RelayConnection()
        await read_hello(ws, conn)
        conn.send_welcome("hostile", "http://hostile.localhost", {})
        await ws.send(conn.data_to_send())
        await script(ws, conn)

    options: dict[str, object] = {"max_size": None, "compression": None}
    options.update(server)
    async with serve(relay, "127.0.0.1", 0, **options) as srv:  # type: ignore[arg-type]
        port = srv.sockets[0].getsockname()[1]
        tunnel = AgentTunnel(
            TunnelConfig(target=target, name="hostile"),
            relay_url=f"ws://127.0.0.1:{port}/_devtunnel/connect",
            sink=sink,
            on_change=lambda info: None,
        )
        await tunnel.start()
        try:
            yield tunnel
        finally:
            await asyncio.wait_for(tunnel.stop(), 30)


def _pings(n: int) -> bytes:
    return f.frame(f.PING, 0, 0, b"hostile!") * n


async def test_a_message_that_never_ends_is_read_fragment_by_fragment() -> None:
    # The tunnel protocol is a byte stream: the agent must act on each fragment as it comes.
    # Before, it joined the fragments until the last one: a relay that never sent it grew the
    # agent's memory without bound (400 MB of fragments: the agent's VmRSS passed 1 GiB).
    ponged = asyncio.Event()
    finished = asyncio.Event()

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        async def reader() -> None:
            async for message in ws:
                if f.frame(f.PONG, 0, 0, b"hostile!") in message:  # type: ignore[operator]
                    ponged.set()

        task = asyncio.create_task(reader())

        async def fragments() -> AsyncIterator[bytes]:
            yield _pings(1)
            for _ in range(50):  # more fragments, still no end of message
                yield b""
            await asyncio.wait_for(ponged.wait(), 10)  # the PONG must come before the message ends
            yield b""

        try:
            await ws.send(fragments())
            finished.set()
        finally:
            task.cancel()

    async with hostile_relay(script):
        await asyncio.wait_for(finished.wait(), 15)
    assert ponged.is_set()


async def close_code_after(data: bytes) -> int | None:
    """The close code the agent ends its connection with after the relay wrote ``data`` (raw
    WebSocket frames) once the handshake was done."""
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        if closed.done():
            return  # the agent reconnecting
        ws.transport.write(data)
        try:
            await asyncio.wait_for(ws.wait_closed(), 10)
        finally:
            if not closed.done():
                closed.set_result(ws.close_code)

    async with hostile_relay(script):
        return await asyncio.wait_for(closed, 15)


async def test_a_frame_larger_than_any_batch_is_refused_by_its_header() -> None:
    # A frame header announcing 1 TiB: the agent closes the connection with 1009 at once, where
    # it used to wait (and buffer) for the whole payload.
    assert await close_code_after(b"\x82\x7f" + (1 << 40).to_bytes(8, "big") + _pings(1000)) == 1009


async def test_a_frame_of_max_frame_bytes_is_taken() -> None:
    # The bound leaves a devtunnel relay's batches alone: a frame of MAX_FRAME bytes passes
    # (frames of a type the agent does not know, which it skips, then one PING).
    ponged = asyncio.Event()
    skipped = f.frame(0x42, 0, 0, bytes((1 << 20) - 9))  # 1 MiB with its header
    payload = skipped * (MAX_FRAME // len(skipped) - 1) + f.frame(0x42, 0, 0, bytes((1 << 20) - 9 - 17)) + _pings(1)
    assert len(payload) == MAX_FRAME

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        ws.transport.write(b"\x82\x7f" + len(payload).to_bytes(8, "big") + payload)
        async for message in ws:
            if f.frame(f.PONG, 0, 0, b"hostile!") in message:  # type: ignore[operator]
                ponged.set()
                return

    async with hostile_relay(script):
        await asyncio.wait_for(ponged.wait(), 30)


async def test_a_relay_that_stops_reading_cannot_grow_the_agents_buffer_and_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The relay floods PINGs and reads nothing. Before, the agent kept reading and queued a PONG
    # for each (21 MB of PINGs: 12.7 MB held in its socket's buffer), and the connection hung for
    # ever: websockets' keepalive ping and closing handshake wait for that buffer to drain.
    # Now the agent stops reading while its socket is full, and drops a socket that stays full.
    monkeypatch.setattr(socket_module, "STALL_TIMEOUT", 1.0)
    connections: list[ServerConnection] = []
    dropped = asyncio.Event()
    sent = 0

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        nonlocal sent
        connections.append(ws)
        if len(connections) > 1:
            await ws.wait_closed()  # the reconnection: a quiet relay
            return
        batch = _pings(60_000)  # 1 MB
        try:
            async with asyncio.timeout(5):
                while sent < 40 << 20:
                    await ws.send(batch)
                    sent += len(batch)
        except (TimeoutError, ConnectionClosed):
            pass  # the agent stopped reading (our own send waits on it), or dropped us
        await ws.wait_closed()
        dropped.set()

    async with hostile_relay(script, max_queue=1) as tunnel:
        session = tunnel._session
        assert session is not None
        transport = session.ws.transport
        held = 0

        async def watch() -> None:
            nonlocal held
            while True:
                held = max(held, transport.get_write_buffer_size())
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait_for(dropped.wait(), 30)
        finally:
            watcher.cancel()
            assert held < 4 << 20, f"the agent held {held} bytes for a relay that reads nothing ({sent} bytes sent)"
        await async_wait_for(lambda: len(connections) == 2, what="the agent to reconnect")


async def test_a_websocket_message_that_never_ends_is_closed_with_1009(monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent gathers a message's fragments for the local service, crediting each as it comes.
    # Before, a relay that never sent the last fragment grew that message without bound (flow
    # control gave the credit back each time); now past MAX_MESSAGE the WebSocket closes with 1009.
    monkeypatch.setattr(local_ws_module, "MAX_MESSAGE", 1 << 20)
    closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    sent = 0

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        nonlocal sent
        sid = conn.open_request(b"GET", b"/chat", b"1.1", ((b"Host", b"hostile.localhost"),), end_stream=True,
                                websocket=True)
        await ws.send(conn.data_to_send())
        accepted = False
        async for message in ws:
            for event in conn.receive_data(message):  # type: ignore[arg-type]
                if isinstance(event, ResponseReceived):
                    accepted = event.status == 101
                elif isinstance(event, WebSocketClosed) and not closed.done():
                    closed.set_result(event.code)
            if accepted and not closed.done() and sent < 8 << 20:
                while conn.send_window(sid) >= 65536 and sent < 8 << 20:
                    conn.send_ws_message(sid, bytes(65536), text=False, fin=False)  # never the last fragment
                    sent += 65536
            if conn.wants_to_send:
                await ws.send(conn.data_to_send())

    with local_websocket() as (port, _):
        async with hostile_relay(script, target=str(port)):
            assert await asyncio.wait_for(closed, 15) == 1009


MiB = 1 << 20
FRAME = 256 << 10


class _LocalService(asyncio.Protocol):
    """A local HTTP service on loopback: answers ``GET`` at once; reads a ``POST`` body whole
    and answers with its length and SHA-256, or (``reads=False``) reads nothing past its head."""

    def __init__(self, reads: bool, open_: list[asyncio.Transport]) -> None:
        self.reads = reads
        self.open = open_
        self.buffer = b""
        self.body: hashlib._Hash | None = None
        self.left = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.open.append(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.body is not None:
            self._take(data)
            return
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        self.buffer = b""
        if head.startswith(b"GET"):
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return
        if not self.reads:
            self.transport.pause_reading()  # never reads the body: it piles up in front of it
            return
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        self.body, self.left = hashlib.sha256(), length
        self._take(rest)

    def _take(self, data: bytes) -> None:
        assert self.body is not None
        self.body.update(data)
        self.left -= len(data)
        if self.left == 0:
            answer = f"{self.body.hexdigest()}".encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
            self.body = None


@asynccontextmanager
async def local_service(*, reads: bool) -> AsyncIterator[int]:
    """``_LocalService`` on a loopback port with small socket buffers (the kernel holds little of
    what it does not read); yields the port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind(("127.0.0.1", 0))
    transports: list[asyncio.Transport] = []
    server = await asyncio.get_running_loop().create_server(lambda: _LocalService(reads, transports), sock=sock)
    try:
        yield sock.getsockname()[1]
    finally:
        server.close()
        for transport in transports:
            transport.abort()


class Peak:
    """The most ``tunnel.held_requests`` showed between any two callbacks of the event loop (each
    relay message is handled in one), from creation to ``stop()``."""

    def __init__(self, tunnel: AgentTunnel) -> None:
        self.tunnel = tunnel
        self.value = 0
        self._handle = asyncio.get_running_loop().call_soon(self._sample)

    def _sample(self) -> None:
        self.value = max(self.value, self.tunnel.held_requests)
        self._handle = asyncio.get_running_loop().call_soon(self._sample)

    def stop(self) -> int:
        self._handle.cancel()
        return self.value


class Uploads:
    """A relay script: POSTs of ``size`` bytes on ``count`` streams, each sent as fast as its
    window allows; the answers, bodies and resets the agent sends are kept by stream."""

    def __init__(self, count: int, size: int, body: bytes | None = None) -> None:
        self.count, self.size = count, size
        self.body = body if body is not None else bytes(size)
        self.sent: dict[int, int] = {}
        self.resets: dict[int, str] = {}
        self.status: dict[int, int] = {}
        self.bodies: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.conn: RelayConnection | None = None
        self.ws: ServerConnection | None = None
        self.changed = asyncio.Event()

    def open(self, method: bytes, path: bytes, size: int = 0) -> int:
        assert self.conn is not None
        headers = ((b"Host", b"hostile.localhost"), (b"Content-Length", str(size).encode()))
        sid = self.conn.open_request(method, path, b"1.1", headers if size else headers[:1], end_stream=not size)
        self.bodies[sid] = b""
        if size:
            self.sent[sid] = 0
        return sid

    def pump(self) -> None:
        assert self.conn is not None
        for sid, sent in self.sent.items():
            while sent < self.size and sid not in self.resets:
                n = min(self.conn.send_window(sid), self.size - sent, FRAME)
                if not n:
                    break
                self.conn.send_data(sid, self.body[sent:sent + n], end_stream=sent + n == self.size)
                sent += n
            self.sent[sid] = sent

    async def flush(self) -> None:
        assert self.conn is not None and self.ws is not None
        if self.conn.wants_to_send:
            await self.ws.send(self.conn.data_to_send())

    async def __call__(self, ws: ServerConnection, conn: RelayConnection) -> None:
        self.ws, self.conn = ws, conn
        for _ in range(self.count):
            self.open(b"POST", b"/upload", self.size)
        self.pump()
        await self.flush()
        async for message in ws:
            for event in conn.receive_data(message):  # type: ignore[arg-type]
                if isinstance(event, StreamReset):
                    self.resets[event.stream_id] = event.reason
                elif isinstance(event, ResponseReceived):
                    self.status[event.stream_id] = event.status
                elif isinstance(event, DataReceived):
                    self.bodies[event.stream_id] += bytes(event.data)
                    conn.acknowledge(event.stream_id, len(event.data))
                    if event.end_stream:
                        self.ended.add(event.stream_id)
            self.pump()
            await self.flush()
            self.changed.set()

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def test_bodies_a_local_service_does_not_read_are_held_within_a_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each stream may be sent its window (4 MiB) before the local service reads a byte, and a
    # relay may open 1,024 streams: before, 200 POSTs to a service that read nothing took the
    # agent from 45 to 999 MiB. Past the ceiling the stream holding the most is reset.
    ceiling = 4 * MiB
    monkeypatch.setattr(session_module, "HELD_REQUESTS", ceiling)
    records: list[Exchange] = []
    uploads = Uploads(8, 32 * MiB)
    async with local_service(reads=False) as port:
        async with hostile_relay(uploads, target=str(port), sink=lambda ex, final: final and records.append(ex)) as tunnel:
            peak = Peak(tunnel)
            await uploads.until(lambda: len(uploads.resets) >= 4, "the agent to reset the streams holding the most")
            assert peak.stop() <= ceiling
            assert tunnel.held_requests <= ceiling
            reason = next(iter(uploads.resets.values()))
            assert "of request bodies the local service has not read (at most 4 MiB)" in reason, reason
            # Another request to the same service is answered all along.
            sid = uploads.open(b"GET", b"/ok")
            await uploads.flush()
            await uploads.until(lambda: sid in uploads.ended, "the GET to be answered")
            assert uploads.status[sid] == 200 and uploads.bodies[sid] == b"ok"
            # The streams still open end (the relay cancels them): nothing is held any more.
            assert uploads.conn is not None
            for open_sid in set(uploads.sent) - set(uploads.resets):
                uploads.conn.reset_stream(open_sid, ErrorCode.CANCEL, "client gone")
            await uploads.flush()
            await async_wait_for(lambda: tunnel.held_requests == 0, what="the held bodies to be let go")
            await async_wait_for(lambda: len(records) >= 9, what="the exchanges to be recorded")
    shed = [ex for ex in records if ex.error == "too_large"]
    assert len(shed) == len(uploads.resets)
    assert all("of request bodies the local service has not read" in ex.error_message for ex in shed)


async def test_uploads_to_a_service_that_reads_arrive_whole_under_the_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    # Three streams' windows fill the ceiling at most: three large uploads are never cut.
    monkeypatch.setattr(session_module, "HELD_REQUESTS", 12 * MiB)
    size = 24 * MiB
    body = os.urandom(size)
    uploads = Uploads(3, size, body)
    async with local_service(reads=True) as port:
        async with hostile_relay(uploads, target=str(port)) as tunnel:
            peak = Peak(tunnel)
            await uploads.until(lambda: len(uploads.ended) == 3, "the uploads to be answered", timeout=60)
            assert peak.stop() <= 12 * MiB
            assert uploads.resets == {}
            assert set(uploads.bodies.values()) == {hashlib.sha256(body).hexdigest().encode()}
            await async_wait_for(lambda: tunnel.held_requests == 0, what="the held bodies to be let go")


async def test_websocket_messages_gathered_for_the_local_service_count_toward_the_ceiling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A message's fragments are credited as they arrive (the local service takes whole messages
    # only) and were no longer counted: a relay sending fragments that never end on many
    # WebSockets made the agent hold up to 64 MiB each, past any ceiling (a window, 4 MiB, on
    # its way at a time: without the gathered bytes the count never passed 8 MiB). They count now until
    # their message goes, and the WebSocket gathering the most is reset past the ceiling.
    ceiling = 8 * MiB
    monkeypatch.setattr(session_module, "HELD_REQUESTS", ceiling)
    monkeypatch.setattr(local_ws_module, "MAX_MESSAGE", 64 * MiB)
    resets: dict[int, str] = {}
    sent: dict[int, int] = {}
    accepted: set[int] = set()
    changed = asyncio.Event()
    each = 16 * MiB

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        for _ in range(1):
            sid = conn.open_request(b"GET", b"/chat", b"1.1", ((b"Host", b"hostile.localhost"),), end_stream=True,
                                    websocket=True)
            sent[sid] = 0
        await ws.send(conn.data_to_send())
        async for message in ws:
            for event in conn.receive_data(message):  # type: ignore[arg-type]
                if isinstance(event, ResponseReceived) and event.status == 101:
                    accepted.add(event.stream_id)
                elif isinstance(event, StreamReset):
                    resets[event.stream_id] = event.reason
            for sid in accepted - set(resets):
                # At most a window (4 MiB) on its way: what reaches the agent alone stays under
                # the ceiling; what it gathers grows past it.
                while conn.send_window(sid) >= 65536 and sent[sid] < each:
                    conn.send_ws_message(sid, bytes(65536), text=False, fin=False)  # never the last fragment
                    sent[sid] += 65536
            if conn.wants_to_send:
                await ws.send(conn.data_to_send())
            changed.set()

    with local_websocket() as (port, _):
        async with hostile_relay(script, target=str(port)) as tunnel:
            peak = Peak(tunnel)
            async with asyncio.timeout(20):
                while not resets:
                    changed.clear()
                    await changed.wait()
            assert peak.stop() <= ceiling
            reason = next(iter(resets.values()))
            assert "of request bodies the local service has not read (at most 8 MiB)" in reason, reason


@pytest.mark.parametrize("reason", ["x" * 200, "é" * 100, "€" * 41 + "x"], ids=["ascii", "two-byte", "three-byte"])
async def test_a_close_reason_longer_than_a_close_frame_holds_reaches_the_local_service_cut(
    reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A WS_CLOSE may carry a megabyte of reason, a close frame 123 bytes of it. Before, the agent
    # handed the whole reason to websockets, which refused to send the close: the local service
    # lost its connection without a close frame (1006) and the agent logged a traceback.
    answered: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        sid = conn.open_request(b"GET", b"/chat", b"1.1", ((b"Host", b"hostile.localhost"),), end_stream=True,
                                websocket=True)
        await ws.send(conn.data_to_send())
        async for message in ws:
            for event in conn.receive_data(message):  # type: ignore[arg-type]
                if isinstance(event, ResponseReceived) and event.status == 101:
                    conn.send_ws_close(sid, 1000, reason)
                elif isinstance(event, WebSocketClosed) and not answered.done():
                    answered.set_result((event.code, event.reason))
            if conn.wants_to_send:
                await ws.send(conn.data_to_send())

    closes: list[int | None] = []
    with local_websocket(closes=closes) as (port, _):
        async with hostile_relay(script, target=str(port)):
            code, echoed = await asyncio.wait_for(answered, 15)
            await async_wait_for(lambda: closes, what="the local service to see the WebSocket end")
    assert closes == [1000], "the local service got no close frame"
    assert code == 1000
    # The local service echoes the reason it got: the longest start of the relay's that fits.
    assert reason.startswith(echoed) and len(echoed.encode()) <= 123 < len(echoed.encode()) + len(reason[len(echoed)].encode())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize("scheme", ["https://attacker.localhost/x#", "javascript", "HTTP"])
async def test_a_scheme_that_no_client_comes_by_is_refused_and_never_makes_an_export_url(scheme: str) -> None:
    # The record and its exports write the scheme the relay names before the Host. Before, a
    # relay naming "https://attacker.localhost/x#" got the request forwarded and recorded so,
    # and a curl export of it (the public URL, by default) sent the captured request, its
    # Authorization with it, to https://attacker.localhost/x.
    answers: dict[int, tuple[int, dict[bytes, bytes]]] = {}
    records: list[Exchange] = []

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        for sid_scheme in (scheme, "https"):
            sid = conn.open_request(
                b"POST", b"/hook", b"1.1",
                ((b"Host", b"hostile.localhost"), (b"Authorization", b"Bearer s3cret"), (b"Content-Length", b"2")),
                end_stream=False, scheme=sid_scheme,
            )
            conn.send_data(sid, b"hi", end_stream=True)
        await ws.send(conn.data_to_send())
        async for message in ws:
            for event in conn.receive_data(message):  # type: ignore[arg-type]
                if isinstance(event, ResponseReceived):
                    answers[event.stream_id] = (event.status, {n.lower(): v for n, v in event.headers})
            if conn.wants_to_send:
                await ws.send(conn.data_to_send())

    with echo_service() as (target, seen):
        async with hostile_relay(script, target=target, sink=lambda ex, final: records.append(ex) if final else None):
            await async_wait_for(lambda: len(answers) == 2 and len(records) == 2, what="both requests answered and recorded")
    refused, honest = answers[1], answers[3]
    assert refused[0] == 400 and refused[1][b"x-devtunnel-error"] == b"bad_request"
    assert honest[0] == 200
    assert len(seen.requests) == 1, "the refused request reached the local service"
    by_scheme = sorted(records, key=lambda ex: ex.scheme)
    assert [ex.scheme for ex in by_scheme] == ["http", "https"]
    assert by_scheme[0].error == "bad_request"
    # Refused before its body was read: the record says so (0 of the 2 bytes it declared), and
    # each export says it sends only those.
    assert (by_scheme[0].request.body, by_scheme[0].request.body_size, by_scheme[0].request.body_truncated) == \
        (b"", 2, True)
    truncated = "# body truncated: 0 of 2 bytes were recorded, this command sends only those\n"
    # Where each export sends it, or says it was sent: the public URL, as the relay is asked for.
    assert export("curl", [by_scheme[0]]).text.startswith(truncated + "curl --http1.1 http://hostile.localhost/hook ")
    assert export("httpie", [by_scheme[0]]).text.startswith(truncated + "http --ignore-stdin POST http://127.0.0.1/hook ")
    har = json.loads(export("har", [by_scheme[0]]).text)
    assert har["log"]["entries"][0]["request"]["url"] == "http://hostile.localhost/hook"


async def test_a_response_head_larger_than_the_relay_announced_it_takes_is_a_502_not_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A relay may announce any max_head_size from 1 KiB (docs/protocol.md); the agent bounds a
    # local head by devtunnel's own 256 KiB. A head between the two reached the wire encoder,
    # which refused it: a ProtocolError traceback ("stream 1 failed") and a bare "internal error
    # in the agent". Both paths: on a new local connection (the stream's task) and on a
    # kept-alive one (answered from its callbacks).
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 3000 + b"\r\nContent-Length: 2\r\n\r\nok"
    small = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                writer.write(big if request.startswith(b"GET /big ") else small)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    answers: dict[int, tuple[int, bytes]] = {}

    async def relay(ws: ServerConnection) -> None:
        conn = RelayConnection(max_head_size=1024)
        await read_hello(ws, conn)
        conn.send_welcome("hostile", "http://hostile.localhost", {})
        for path in (b"/big", b"/small", b"/big"):  # a new connection, then the kept-alive one
            sid = conn.open_request(b"GET", path, b"1.1", ((b"Host", b"hostile.localhost"),), end_stream=True)
            await ws.send(conn.data_to_send())
            async for message in ws:
                for event in conn.receive_data(message):  # type: ignore[arg-type]
                    if isinstance(event, ResponseReceived):
                        answers[event.stream_id] = (event.status, b"")
                    elif isinstance(event, StreamReset):
                        answers[event.stream_id] = (event.code, event.reason.encode())
                if conn.wants_to_send:
                    await ws.send(conn.data_to_send())
                if sid in answers:
                    break
        # Stay connected: a relay that returned here would close, and the agent's reconnection
        # would get the three requests again, recorded again.
        await ws.wait_closed()

    records: list[Exchange] = []
    server = await asyncio.start_server(service, "127.0.0.1", 0)
    async with server, serve(relay, "127.0.0.1", 0) as relay_server:
        tunnel = AgentTunnel(
            TunnelConfig(target=str(server.sockets[0].getsockname()[1]), name="hostile"),
            relay_url=f"ws://127.0.0.1:{relay_server.sockets[0].getsockname()[1]}/_devtunnel/connect",
            sink=lambda ex, final: records.append(ex) if final else None,
            on_change=lambda info: None,
        )
        await tunnel.start()
        try:
            await async_wait_for(lambda: len(answers) == 3 and len(records) == 3, what="three answers, recorded")
        finally:
            await asyncio.wait_for(tunnel.stop(), 30)
    refused = [answers[1], answers[5]]
    assert answers[3] == (200, b"")
    for code, reason in refused:
        assert code == ErrorCode.LOCAL_ERROR, (code, reason)
        assert b"the local service's response head is larger than the relay takes" in reason
    failed = [ex for ex in records if ex.request.target == b"/big"]
    assert [ex.error for ex in failed] == ["local_error", "local_error"]
    assert all("exceeds the peer's limit of 1024" in (ex.error_message or "") for ex in failed)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[:3000]
