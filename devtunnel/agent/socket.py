"""The agent's WebSocket to its relay: messages go to a callback, sends go out at once.

A ``websockets`` client connection whose tunnel messages skip the library's message queue:
each complete binary message is handed to ``on_message`` inside ``data_received``, and
``send_now`` writes a message to the transport without a coroutine. At one request at a time
that saves the agent two trips through the event loop per request (the reader task waking for
the message, and a writer task waking to send the answer). Everything else (the opening
handshake, pings, the closing handshake) stays with ``websockets``.

The tunnel protocol is a byte stream (message boundaries mean nothing), so a fragmented message
is handed on fragment by fragment, never joined: a relay that never ends a message cannot make
the agent hold it. One frame is at most ``MAX_FRAME`` bytes (``websockets`` refuses a larger one
by its header, with close code 1009, before buffering it).

While the socket is full (the transport asked to pause writing), the agent stops reading the
relay: what a relay sends can make the agent answer (PONGs, refused streams, 400s), and a relay
that does not read those answers must not grow the agent's buffer with them. A socket that stays
full without draining a byte for ``STALL_TIMEOUT`` seconds is dropped (the tunnel reconnects):
``websockets``' own keepalive ping and closing handshake wait for the buffer to drain, so they
would wait for ever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable

import websockets.frames
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State

__all__ = ["MAX_FRAME", "STALL_TIMEOUT", "TunnelSocket"]

log = logging.getLogger("devtunnel.agent")

STALL_TIMEOUT = 15.0
"""Seconds the relay socket may stay full without draining a byte before the agent drops it
(the relay gives an agent the same)."""


class _MaskBytes:
    """``secrets.token_bytes`` for ``websockets.frames``, served from one ``os.urandom`` read
    per 1,024 frames.

    A client masks every frame it sends with 4 fresh random bytes (RFC 6455 5.3), and
    websockets asks ``secrets.token_bytes`` for them: a ``getrandom`` system call per message.
    These bytes come from the same source, read 4 KiB at a time. A forked child starts afresh.
    """

    _POOL = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._used = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._buffer, self._used = b"", 0

    def token_bytes(self, n: int) -> bytes:
        with self._lock:
            start = self._used
            if start + n > len(self._buffer):
                self._buffer = os.urandom(max(self._POOL, n))
                start = 0
            self._used = start + n
            return self._buffer[start : start + n]


if hasattr(getattr(websockets.frames, "secrets", None), "token_bytes"):  # where Frame.serialize finds it
    websockets.frames.secrets = _MaskBytes()  # type: ignore[assignment,attr-defined]

MAX_FRAME = 64 << 20
"""Largest WebSocket frame accepted from the relay: the limit the relay puts on the agent's
messages (``relay.listening.WS_MAX_SIZE``). A relay sends each batch of tunnel frames as one
WebSocket frame; the batches of a devtunnel relay stay far below it."""

MessageHandler = Callable[[bytes, bool], None]
"""Called with each message, or each fragment of one, and whether it was text."""


class TunnelSocket(ClientConnection):
    """A client connection that delivers messages (fragment by fragment) to ``on_message`` as they arrive.

    Until ``on_message`` is set, messages queue for ``recv()`` as usual.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.on_message: MessageHandler | None = None
        self.on_writable: Callable[[], None] | None = None
        """Called when the transport's buffer drained below its low-water mark, or the connection ended."""
        self._text = False
        self._stall: asyncio.TimerHandle | None = None

    # -- receiving ----------------------------------------------------------------------
    def process_event(self, event: Event) -> None:
        handler = self.on_message
        if handler is None or self.response is None or not isinstance(event, Frame):
            super().process_event(event)
            return
        opcode = event.opcode
        if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
            if event.fin:
                handler(bytes(event.data), opcode is Opcode.TEXT)
            else:  # the first fragment: handed on at once, as every one after it
                self._text = opcode is Opcode.TEXT
                handler(bytes(event.data), self._text)
        elif opcode is Opcode.CONT:  # websockets refuses one outside a fragmented message
            handler(bytes(event.data), self._text)
        else:
            super().process_event(event)  # PING, PONG, CLOSE

    # -- sending ------------------------------------------------------------------------
    def send_now(self, data: bytes) -> bool:
        """Send one binary message without waiting; returns False if the connection is not open.

        Back-pressure is the caller's: watch ``paused`` and ``on_writable``.
        """
        if self.protocol.state is not State.OPEN:
            return False
        self.protocol.send_binary(data)
        try:
            self.send_data()
        except Exception as exc:  # the transport broke: end the connection, as a failed send() does
            self.set_connection_exc(exc)
            self.transport.abort()
            return False
        return True

    # -- flow control -------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        self.transport.pause_reading()  # the module docstring says why
        if self._stall is None:
            self._stall = self.loop.call_later(STALL_TIMEOUT, _check_stall, self, self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if not self.transport.is_closing():
            self.transport.resume_reading()
        if self.on_writable is not None:
            self.on_writable()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        super().connection_lost(exc)
        if self.on_writable is not None:
            self.on_writable()


def _check_stall(sock: TunnelSocket, mark: int) -> None:
    """``STALL_TIMEOUT`` after the socket filled: drop it unless it drained something since."""
    sock._stall = None
    if not sock.paused or sock.transport.is_closing():
        return
    held = sock.transport.get_write_buffer_size()
    if held < mark:  # a slow relay, not a stuck one: watch again
        sock._stall = sock.loop.call_later(STALL_TIMEOUT, _check_stall, sock, held)
        return
    log.warning("the relay read nothing for %g s (%d bytes waiting): dropping the connection", STALL_TIMEOUT, held)
    sock.set_connection_exc(TimeoutError(f"the relay read nothing for {STALL_TIMEOUT:g} s"))
    sock.transport.abort()

