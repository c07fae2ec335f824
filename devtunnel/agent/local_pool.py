"""Connections to the local service, kept alive in a small pool per tunnel."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import ssl
from collections import deque
from collections.abc import Callable

from devtunnel.agent.local_response import LocalResponse
from devtunnel.values.target import Target

__all__ = ["LocalConnection", "LocalPool", "DEFAULT_CONNECT_TIMEOUT", "READ_BUFFER"]

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to wait for the local service to accept a connection (and finish TLS)."""
READ_BUFFER = 256 * 1024
"""Bytes received but not yet read before reading from the socket pauses."""
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class LocalConnection(asyncio.Protocol):
    """One connection to the local service (plain TCP or TLS).

    A small Protocol rather than asyncio streams: bytes the local service sent before it
    reset the connection stay readable (a ``StreamReader`` raises the error first and loses
    them, which would turn an early ``413`` into a ``502``), and so do those still in the socket
    when a write broke the connection (``_take_unread``: on Linux, where the connection keeps a
    socket of its own for TCP_QUICKACK).
    """

    def __init__(self) -> None:
        # Created by the loop's connection factory: kept, since asking for the running loop
        # costs a getpid() system call on every call.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._quickack: Callable[[], None] | None = None
        self._own_sock: socket.socket | None = None
        self._plain = False  # plain TCP: bytes read from the socket itself are the service's (no TLS)
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_at = 0.0
        self._armed_at = 0.0
        self._alarm_call: Callable[[], None] | None = None
        self._stray = 0  # see expect_stray
        self.reset_after_end = False
        """The service's end came with nothing unread, and a reset after it: it had closed the
        connection before bytes we wrote reached it (a kept-alive connection it let go as idle
        while a request was being written on it: the end was on its way), so they were never
        read, as when it resets the connection. Linux only (the connection's own socket)."""
        self.spare_response: LocalResponse | None = None
        """The parser of this connection's last response, when the quick path read it whole
        and the connection was kept: the next quick answer here reuses it (``LocalResponse.again``)."""
        self.listener: Callable[[], None] | None = None
        """Called (from the protocol callback) whenever bytes, the end, or an error arrive; it
        must call ``acknowledge`` after bytes that leave a response unfinished."""

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._plain = transport.get_extra_info("sslcontext") is None
        sock = transport.get_extra_info("socket")
        if _TCP_QUICKACK is not None and sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Our own socket object on a duplicate of the descriptor (options belong to the
            # socket, not the descriptor): the one the loop hands out builds a temporary socket
            # object, with a getsockname() system call, on every setsockopt().
            try:
                self._own_sock = socket.socket(sock.family, sock.type, sock.proto, os.dup(sock.fileno()))
            except OSError:
                return
            self._quickack = functools.partial(self._own_sock.setsockopt, socket.IPPROTO_TCP, _TCP_QUICKACK, 1)

    def data_received(self, data: bytes) -> None:
        if self._stray:
            data = self._drop_stray(data)
            if not data:
                return
        if self.listener is None:
            self.acknowledge()  # a listener parses first and acknowledges only an unfinished response
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > READ_BUFFER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True  # back-pressure: the relay side is slower than the local service
            self.transport.pause_reading()
        self._wake_reader()

    def expect_stray(self, length: int) -> None:
        """Drop up to ``length`` bytes that come before the next response's status line: the body
        a 304 announced (its Content-Length), which a service may write anyway, after the head."""
        self._stray = length

    def _drop_stray(self, data: bytes) -> bytes:
        """``data`` without what is left of the body ``expect_stray`` announced, when it comes
        first, up to a status line that begins within it (a service may write less than it
        announced); as it is when it begins with one (the service wrote no body)."""
        stray = self._stray
        if data[:5] == b"HTTP/"[: len(data)]:
            self._stray = 0
            return data
        at = data.find(b"HTTP/1.", 1, min(stray, len(data)) + 6)
        if at > 0:
            self._stray = 0
            return data[at:]
        self._stray = max(stray - len(data), 0)
        return data[stray:]

    def eof_received(self) -> bool:
        self._eof = True
        sock = self._own_sock
        if sock is not None and not self._chunks:
            try:
                self.reset_after_end = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
            except OSError:
                pass
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._quickack = None
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        if self._own_sock is not None:
            if exc is not None and self._plain and not self._reading_paused:  # (bounded: paused, it holds enough)
                self._take_unread(self._own_sock)
            self._own_sock.close()
            self._own_sock = None
        self._eof = True
        self._error = exc
        self._wake_reader()
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _take_unread(self, sock: socket.socket) -> None:
        """Keep the bytes still in the socket of a connection that broke.

        A service that answers a request before reading its body (a 413, a 401) and closes
        resets the connection: the agent's next write of the body fails, and the event loop
        closes the transport for it without reading what had arrived, the answer. Read here,
        it is the response (RFC 9112 9.6: a client sending a body watches for one)."""
        while True:
            try:
                data = sock.recv(READ_BUFFER, socket.MSG_DONTWAIT)
            except OSError:  # nothing more (BlockingIOError), or the reset itself
                return
            if not data:
                return
            self._chunks.append(data)
            self._buffered += len(data)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def acknowledge(self) -> None:
        """Acknowledge what was received at once, rather than after the kernel's ACK delay.

        Many development servers (http.server, Werkzeug) write a response's head and body in
        two sends without TCP_NODELAY: Nagle holds the body until the head is acknowledged, and
        a delayed ACK from us would cost every keep-alive request 40 ms. Needed after every read
        that leaves a response unfinished; one that completes it leaves nothing held back (the
        next request carries the ACK), so the quick path skips the system call then.
        """
        if self._quickack is not None:
            try:
                self._quickack()
            except OSError:
                self._quickack = None

    def set_alarm(self, delay: float, call: Callable[[], None]) -> None:
        """Call ``call`` in ``delay`` seconds unless ``clear_alarm`` comes first.

        One timer serves the connection's successive requests: a new alarm later than the
        armed timer leaves it as it is, and the timer, when it fires, calls back only if the
        current alarm is due, else it waits again for that one. So a request answered in time
        (the usual case) costs no timer of its own.
        """
        at = self.loop.time() + delay
        self._alarm_at = at
        self._alarm_call = call
        timer = self._alarm
        if timer is None or self._armed_at > at:
            if timer is not None:
                timer.cancel()
            self._alarm = self.loop.call_at(at, self._ring)
            self._armed_at = at

    def clear_alarm(self) -> None:
        """No call for the alarm set last (the timer stays for the next one)."""
        self._alarm_call = None

    def _ring(self) -> None:
        self._alarm = None
        call = self._alarm_call
        if call is None:
            return
        if self._alarm_at > self.loop.time():
            self._alarm = self.loop.call_at(self._alarm_at, self._ring)  # set after this timer was
            self._armed_at = self._alarm_at
            return
        self._alarm_call = None
        call()

    def _wake_reader(self) -> None:
        listener = self.listener
        if listener is not None:
            listener()
        waiter, self._read_waiter = self._read_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- for the forwarder -----------------------------------------------------------------------
    async def read(self, timeout: float | None = None) -> bytes:
        """Everything received so far (waiting for some); ``b""`` at the end of the stream.

        Raises:
            OSError: the connection broke and every byte received before was already read.
            TimeoutError: nothing arrived within ``timeout`` seconds (the connection stays usable).
        """
        while not self._chunks:
            if self._eof:
                if self._error is not None:
                    raise self._error
                return b""
            waiter = self._read_waiter = self.loop.create_future()
            if timeout is None:
                await waiter
                continue
            # One timer on the waiter itself: cheaper than an asyncio.timeout() scope per read.
            timer = self.loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.discard()
        return data

    def peek(self) -> bytes:
        """Everything received and not yet read, without reading it (``read`` still returns it)."""
        chunks = self._chunks
        if len(chunks) > 1:
            self._chunks = chunks = [b"".join(chunks)]
        return chunks[0] if chunks else b""

    @property
    def at_eof(self) -> bool:
        """The local service closed its side, or the connection broke."""
        return self._eof

    def discard(self) -> None:
        """Drop what ``peek`` returned: it was used."""
        self._chunks = []
        self._buffered = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        """Queue bytes for the local service."""
        assert self.transport is not None
        self.transport.write(data)

    def writelines(self, parts: list[bytes] | tuple[bytes, ...]) -> None:
        """Queue several pieces at once."""
        assert self.transport is not None
        self.transport.writelines(parts)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is low again.

        Raises:
            ConnectionResetError: the connection is closed.
        """
        if self._eof and self._error is not None or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the local service closed the connection")
        if self._writing_paused:
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter
            if self.transport.is_closing():
                raise ConnectionResetError("the local service closed the connection")

    @property
    def usable(self) -> bool:
        """False once the local service closed its side, the socket broke, or it sent unasked bytes."""
        return not self._eof and not self._chunks and self.transport is not None and not self.transport.is_closing()

    def abort(self) -> None:
        """Drop the connection at once (nothing more will be read or written)."""
        if self.transport is not None:
            self.transport.abort()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class LocalPool:
    """Keep-alive connections to one local service, the most recently used first."""

    def __init__(
        self,
        target: Target,
        *,
        insecure: bool = False,
        max_idle: int = 64,
        idle_timeout: float = 30.0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.target = target
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._idle: deque[LocalConnection] = deque()
        self._ssl: ssl.SSLContext | None = None
        if target.tls:
            ctx = ssl.create_default_context()
            if insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl = ctx

    async def connect(self) -> LocalConnection:
        """A new connection. Raises OSError (ConnectionRefusedError ...) or TimeoutError."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(
                LocalConnection,
                self.target.host,
                self.target.port,
                ssl=self._ssl,
                server_hostname=self.target.host if self._ssl else None,
            )
        return conn

    def take(self) -> LocalConnection | None:
        """An idle connection that still looks alive, or None."""
        while self._idle:
            conn = self._idle.pop()
            if conn.usable and conn.loop.time() - conn.idle_since < self.idle_timeout:
                return conn
            conn.abort()
        return None

    def give_back(self, conn: LocalConnection) -> None:
        """Keep a connection whose last response ended cleanly, for the next request."""
        if not conn.usable:
            conn.abort()
            return
        conn.idle_since = conn.loop.time()
        self._idle.append(conn)
        while len(self._idle) > self.max_idle:
            self._idle.popleft().abort()

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().abort()
