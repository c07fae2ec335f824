"""The agent's WebSocket to its relay: messages go to a callback, sends go out at once.

A ``websockets`` client connection whose tunnel messages skip the library's message queue:
the bytes of binary messages are handed to ``on_message`` inside ``data_received``, and
``send_now`` writes a message to the transport without a coroutine. At one request at a time
that saves the agent two trips through the event loop per request (the reader task waking for
the message, and a writer task waking to send the answer). Everything else (the opening
handshake, pings, the closing handshake) stays with ``websockets``.

The tunnel protocol is a byte stream (message boundaries mean nothing), so a message is handed
on as its bytes arrive, never joined: once the connection is open, the agent reads the relay's
data frames itself (``_FrameReader``), and what each read of the socket brought goes to
``on_message``, the WebSocket headers cut out. A relay that never ends a message, or sends
frames of ``MAX_FRAME`` bytes, cannot make the agent hold them once the reader took over: at the
first read after the handshake that starts between two frames. (A relay that makes every read
end inside a frame from its handshake's answer on, which no devtunnel relay does, keeps
``websockets`` reading, a whole frame of up to ``MAX_FRAME`` bytes at a time.) (``websockets`` reads a whole
frame into its buffer before handing it on, and the tunnel protocol then parsed all of it at
once: uploads sent in frames of 60 MiB raised the agent's peak memory by 210 MiB more than the
same uploads in frames of 1 MiB.) Control frames (PING, PONG, CLOSE: 125 bytes at most) still
go to ``websockets`` whole, as does any frame the agent does not read itself (a masked one, one
with a reserved bit, an unknown opcode, a continuation out of place, one announcing more than
``MAX_FRAME`` bytes): ``websockets`` refuses it and closes the connection with its code (1009
for a frame too large, refused by its header). Either way the close code and reason and the bytes
handed on are those ``websockets`` alone gives, however the relay's bytes are split into reads.

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
from websockets.protocol import Event, Protocol, State

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
"""Called with the bytes of messages as they arrive (any part of one, the payload a read of the
socket brought) and whether they are text."""


class TunnelSocket(ClientConnection):
    """A client connection that delivers the bytes of messages to ``on_message`` as they arrive.

    Until ``on_message`` is set, messages queue for ``recv()`` as usual; from the first read
    after it that starts a frame, ``_FrameReader`` reads the frames. Until then (a frame began in
    an earlier read, and ``websockets``' parser holds part of it or has read its header),
    ``websockets`` reads them, and hands each on whole: at most ``MAX_FRAME`` bytes at a time.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.on_message: MessageHandler | None = None
        self.on_writable: Callable[[], None] | None = None
        """Called when the transport's buffer drained below its low-water mark, or the connection ended."""
        self._text = False
        self._stall: asyncio.TimerHandle | None = None
        self._reader: _FrameReader | None = None
        """Reads the relay's frames once ``on_message`` is set (the module docstring says why)."""
        self._plain = False
        """``websockets`` reads every frame from here on (the connection is closing, or failed)."""

    # -- receiving ----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            if (
                self._plain
                or self.on_message is None
                or self.response is None
                or self.protocol.state is not State.OPEN
                or not _between_frames(self.protocol)  # websockets reads the frame it began
            ):
                super().data_received(data)
                return
            reader = self._reader = _FrameReader(self)
        reader.feed(data)

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


_DATA_OPCODES = (Opcode.CONT.value, Opcode.TEXT.value, Opcode.BINARY.value)
_OPCODES = (*_DATA_OPCODES, Opcode.CLOSE.value, Opcode.PING.value, Opcode.PONG.value)
_CLOSE = Opcode.CLOSE.value


class _FrameReader:
    """Reads the relay's WebSocket frames for ``TunnelSocket`` and hands on the payload bytes of
    its data frames read by read, cut at nothing but the reads of the socket.

    Between reads it keeps at most one incomplete frame header (14 bytes) or one control frame
    (127 bytes with its header, handed to ``websockets`` once whole). A frame it does not read
    itself goes to ``websockets`` with all that follows it, and the socket stops using the reader;
    ``websockets``' parser is told first whether a message is open, so that it judges the frame
    (and gives the close code) as it would have had it read every frame before.

    It starts where ``websockets``' parser stands between two frames, in or out of a message.
    """

    __slots__ = ("sock", "head", "left", "inside", "size", "text")

    def __init__(self, sock: TunnelSocket) -> None:
        self.sock = sock
        self.head = b""
        """The bytes of a frame not handed on yet: its header while it is incomplete, or a
        whole control frame while its payload comes."""
        self.left = 0
        """Payload bytes of the current data frame still to come (0: the next bytes start a frame)."""
        self.inside = sock.protocol.current_size is not None  # websockets read the message's first frame
        """A message is open: its last frame has not come (only continuation frames may follow)."""
        self.size = sock.protocol.current_size or 0
        """Payload bytes of the open message's frames read so far (``websockets``' ``current_size``,
        which its reason for closing 1009 counts)."""
        self.text = sock._text

    def feed(self, data: bytes) -> None:
        """Read ``data`` (a read of the socket); hand on the payload bytes it carries.

        They are handed on once every frame of the read was read, as websockets does: a CLOSE
        that came in the same read is known by then (``Session`` drops the requests that came
        with the relay's close)."""
        sock = self.sock
        if sock.protocol.state is not State.OPEN and _discards(sock):  # failed here (a keepalive timeout):
            self._give_up(data)  # websockets discards all that comes, as it would have read it
            return
        size = len(data)
        pos = 0
        out: list[tuple[bytes, bool]] = []  # (payload bytes, text): at most the bytes of the read
        while pos < size:
            left = self.left
            if left:  # a data frame's payload, as far as this read brings it
                n = min(left, size - pos)
                out.append((data if n == size else data[pos : pos + n], self.text))
                self.left = left - n
                pos += n
                continue
            head = self.head
            if head:
                data = head + data[pos:]
                size = len(data)
                pos = 0
                self.head = b""
            if size - pos < 2:
                self.head = data[pos:]
                break
            first = data[pos]
            second = data[pos + 1]
            opcode = first & 0x0F
            if second & 0x80 or opcode not in _OPCODES:  # websockets refuses it by these two bytes
                self._give_up(data[pos:])
                break
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                start += 2
            elif length == 127:
                start += 8
            if start > size:
                self.head = data[pos:]
                break
            if length >= 126:
                length = int.from_bytes(data[pos + 2 : start], "big")
            if first & 0x70 or length > MAX_FRAME or opcode not in _DATA_OPCODES:
                if opcode >= 8 and not first & 0x70 and first & 0x80 and length <= 125:
                    end = start + length  # a control frame: to websockets once it is whole
                    if end > size:
                        self.head = data[pos:]
                        break
                    if opcode == _CLOSE:  # websockets reads (and discards) all that follows,
                        self._give_up(data[pos:])  # or refuses it inside a message
                        break
                    ClientConnection.data_received(sock, data[pos:end])
                    if sock.protocol.state is not State.OPEN:
                        self._give_up(data[end:])
                        break
                    pos = end
                    continue
                self._give_up(data[pos:])  # websockets refuses it, with the code the frame deserves
                break
            if (opcode == 0) != self.inside:  # a continuation out of place, or a new message inside one:
                self._give_up(data[pos:])  # websockets refuses it
                break
            if opcode:
                self.text = opcode == 1
                self.size = length
            else:
                self.size += length
            self.inside = not first & 0x80
            self.left = length
            pos = start
            if not length:
                out.append((b"", self.text))
        handler = sock.on_message
        if handler is not None:
            for piece, text in out:
                handler(piece, text)

    def _give_up(self, rest: bytes) -> None:
        """Hand ``rest`` and all that follows to ``websockets``, which knows then what the reader knew."""
        sock = self.sock
        sock._reader = None
        sock._plain = True
        sock._text = self.text
        protocol = sock.protocol
        # The open message's size, as websockets would have counted it (it tells the bytes read
        # before a frame too large in its reason for closing 1009). Handed over between frames
        # (or where websockets discards all that comes), so every frame counted was read whole.
        protocol.current_size = self.size if self.inside else None
        sock.data_received(rest)


def _discards(sock: TunnelSocket) -> bool:
    """Whether ``websockets`` discards what the relay sends from now on: the connection failed on
    this side (``Protocol.fail``, RFC 6455 7.1.7), where a closing handshake still reads frames."""
    return getattr(sock.protocol.parser, "__name__", "") == "discard"


def _between_frames(protocol: Protocol) -> bool:
    """Whether ``websockets``' parser waits for the first byte of a frame and holds none: the
    frame parser (``Protocol.parse``) waits in ``StreamReader.at_eof``, not inside ``Frame.parse``
    (which may have read a header, or part of it, and wait for the rest of the frame)."""
    outer: object = None
    inner: object = protocol.parser
    while (step := getattr(inner, "gi_yieldfrom", None)) is not None:
        outer, inner = inner, step
    return (
        getattr(inner, "__name__", "") == "at_eof"
        and getattr(outer, "__name__", "") == "parse"
        and not protocol.reader.buffer
    )


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

