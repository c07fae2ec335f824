"""One agent's WebSocket at the relay: the protocol connection, its writer and its streams.

The agent's messages are fed to the sans-IO ``Connection`` in the WebSocket protocol's
callback, and each event goes to the ``Stream`` it belongs to. Request handlers queue frames
through the same ``Connection`` and call ``flush()``: everything queued in one turn of the
event loop goes out as a single WebSocket message, from a ``call_soon`` callback, so frames of
many streams share messages; a writer task takes over only while the agent's socket is full.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from devtunnel.errors import ProtocolError
from devtunnel.protocol.connection import Connection, ErrorCode
from devtunnel.protocol.events import (
    DataReceived,
    Event,
    GoAway,
    ResponseReceived,
    StreamReset,
    WebSocketClosed,
    WebSocketMessageReceived,
    WindowUpdated,
)

log = logging.getLogger("devtunnel.relay")

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


class DirectSocket(Protocol):
    """An agent WebSocket that can send a message from a plain callback (``relay_http.py``)."""

    writable: asyncio.Event

    def send_now(self, data: bytes) -> bool:
        """Send one binary message now; False while the transport is paused."""


LAST_WORDS_TIMEOUT = 1.0
"""Seconds to spend sending a GOAWAY and close to an agent on the way out."""


async def send_last_words(send: ASGISend, messages: list[dict[str, Any]]) -> None:
    """Send closing messages to an agent that may be gone or not reading, without waiting long."""
    try:
        async with asyncio.timeout(LAST_WORDS_TIMEOUT):
            for message in messages:
                await send(message)
    except Exception as exc:  # gone, or not reading: the heartbeat will drop it
        log.debug("could not finish talking to an agent: %r", exc)


class Stream:
    """What the relay knows of one stream: the response head, queued body, and failure.

    ``chunks`` holds response body bytes (HTTP streams) or ``WebSocketMessageReceived`` /
    ``WebSocketClosed`` events (WebSocket streams), in arrival order.

    The response side either awaits ``wait()`` in a task, or sets ``listener``, which ``wake``
    calls instead (``relay_proxy.DirectExchange``).
    """

    __slots__ = (
        "id", "websocket", "head", "chunks", "ended", "failure", "client_gone", "listener", "_waiter", "_window_waiter",
    )

    def __init__(self, stream_id: int, websocket: bool = False) -> None:
        self.id = stream_id
        self.websocket = websocket
        self.head: ResponseReceived | None = None
        self.chunks: deque[Any] = deque()
        self.ended = False
        self.failure: StreamReset | None = None
        """Set when the agent reset the stream or the tunnel went away."""
        self.client_gone = False
        self.listener: Callable[[], None] | None = None
        """Called by ``wake`` (from inside the tunnel's message callback: it must not block)."""
        self._waiter: asyncio.Future[None] | None = None
        self._window_waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """Wake the response side (something arrived, or the stream failed)."""
        listener = self.listener
        if listener is not None:
            listener()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_window(self) -> None:
        """Wake the request side (send window grew, or the stream failed)."""
        waiter = self._window_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, reset: StreamReset) -> None:
        """Record a failure and wake both sides."""
        if self.failure is None:
            self.failure = reset
        self.wake()
        self.wake_window()

    def on_client_gone(self) -> None:
        """The public client's connection was lost."""
        self.client_gone = True
        self.wake()
        self.wake_window()

    async def wait(self) -> None:
        """Wait until ``wake`` is called."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def wait_window(self) -> None:
        """Wait until ``wake_window`` is called."""
        self._window_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._window_waiter
        finally:
            self._window_waiter = None


class Tunnel:
    """One connected agent holding tunnel ``name``.

    Args:
        name: the tunnel name.
        token: the token the agent authenticated with (names belong to tokens).
        conn: the protocol connection, past its handshake.
        send: the ASGI ``send`` of the agent's WebSocket.
        peer: the agent's address, for log lines.
    """

    def __init__(self, name: str, token: str, conn: Connection, send: ASGISend, peer: str) -> None:
        self.name = name
        self.token = token
        self.conn = conn
        self.peer = peer
        self.streams: dict[int, Stream] = {}
        self.closed = False
        self.draining = False
        """GOAWAY was sent or received: no new streams, open ones may finish."""
        self.end_reason: str | None = None
        """Why the connection is ending, once a GOAWAY was sent or received."""
        self._send = send
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._flush_pending = False
        self.socket: DirectSocket | None = None
        """The agent's WebSocket protocol, when it can send without a coroutine (``send_now``)."""

    # -- writing ---------------------------------------------------------------------
    def start_writer(self) -> None:
        """Start the task that sends queued frames when they cannot go at once."""
        self._writer = self._loop.create_task(self._write_loop(), name=f"relay-writer-{self.name}")

    def flush(self) -> None:
        """Send whatever the connection has queued, once the current callbacks are done.

        Frames queued by all the streams in one turn of the event loop go out as one
        WebSocket message, written from a plain callback; only when the agent's socket is
        full (or no ``socket`` is set) does the writer task take over.
        """
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        socket = self.socket
        if self.closed or socket is None or not socket.writable.is_set():
            self._wake.set()
            return
        data = self.conn.data_to_send()
        if not data:
            return
        try:
            socket.send_now(data)  # True: writable was checked just above
        except Exception as exc:  # uvicorn raises its own ClientDisconnected / OSError here
            log.debug("tunnel %s: write failed: %r", self.name, exc)
            self.close("the agent connection broke")

    async def _write_loop(self) -> None:
        wake = self._wake
        conn = self.conn
        send = self._send
        while not self.closed:
            await wake.wait()
            wake.clear()
            socket = self.socket
            if socket is not None:
                # The data is taken only once it can be written: a flush that runs first
                # sends it itself, so messages never overtake each other.
                await socket.writable.wait()
                self._flush_now()
                continue
            data = conn.data_to_send()
            if data:
                try:
                    await send({"type": "websocket.send", "bytes": data})
                except Exception as exc:  # uvicorn raises its own ClientDisconnected / OSError here
                    log.debug("tunnel %s: write failed: %r", self.name, exc)
                    self.close("the agent connection broke")
                    return

    # -- streams -----------------------------------------------------------------------
    def open(self, stream: Stream) -> None:
        """Track a stream opened on ``conn``."""
        self.streams[stream.id] = stream

    def forget(self, stream: Stream, *, complete: bool) -> None:
        """Stop tracking ``stream``; reset it on the wire unless it completed both ways."""
        self.streams.pop(stream.id, None)
        if not complete and not self.closed:
            self.conn.reset_stream(stream.id, ErrorCode.CANCEL, "the public client went away")
            self.flush()

    def handle(self, events: list[Event]) -> None:
        """Hand each received event to its stream."""
        streams = self.streams
        for event in events:
            # Ordered by how often each event arrives.
            if isinstance(event, DataReceived):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    if event.data:
                        stream.chunks.append(event.data)
                    if event.end_stream:
                        stream.ended = True
                    stream.wake()
            elif isinstance(event, ResponseReceived):
                stream = streams.get(event.stream_id)
                # Interim 1xx answers (other than 101 on a WebSocket) are not forwarded.
                if stream is not None and (event.status >= 200 or stream.websocket):
                    stream.head = event
                    if event.end_stream:
                        stream.ended = True
                    stream.wake()
            elif isinstance(event, WindowUpdated):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.wake_window()
                elif event.stream_id == 0:
                    for stream in streams.values():
                        stream.wake_window()
            elif isinstance(event, (WebSocketMessageReceived, WebSocketClosed)):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.chunks.append(event)
                    stream.wake()
            elif isinstance(event, StreamReset):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.fail(event)
            elif isinstance(event, GoAway):
                self.draining = True
                self.end_reason = f"it left: {event.reason or 'no reason given'}"

    # -- ending ------------------------------------------------------------------------
    def goaway(self, code: ErrorCode, reason: str) -> None:
        """Tell the agent this connection ends, and why; stop taking new streams."""
        self.draining = True
        try:
            self.conn.send_goaway(code, reason)
        except ProtocolError:
            return
        self.flush()

    def close(self, reason: str) -> None:
        """Mark the tunnel gone and fail every open stream with ``reason``."""
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        failure = StreamReset(0, int(ErrorCode.CANCEL), reason)
        for stream in list(self.streams.values()):
            stream.fail(failure)
        self.streams.clear()

    async def disconnect(self, code: ErrorCode, reason: str, ws_code: int) -> None:
        """End this connection from the relay's side: GOAWAY, fail streams, close the WebSocket."""
        self.end_reason = reason
        self.goaway(code, reason)
        self.close(reason)
        await self.finish_writing({"type": "websocket.close", "code": ws_code, "reason": reason[:120]})

    async def finish_writing(self, *then: dict[str, Any]) -> None:
        """Stop the writer, send what is still queued (a GOAWAY), then the messages ``then``."""
        await self.stop_writer()
        data = self.conn.data_to_send()
        messages = [{"type": "websocket.send", "bytes": data}] if data else []
        await send_last_words(self._send, [*messages, *then])

    async def stop_writer(self) -> None:
        """Stop the writer task."""
        self.closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
