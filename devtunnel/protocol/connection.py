"""The sans-IO tunnel connection, common to both ends: frames, streams, flow control.

Bytes in, events out; calls in, bytes to send out. ``Connection`` is the part both ends share;
each end is a subclass holding what only it sends and receives, the way websockets splits its
``Protocol`` into ``ServerProtocol`` and ``ClientProtocol``:

- ``relay_side.RelayConnection``: takes HELLO, sends WELCOME and POOL, opens a stream per public
  request, takes the responses and the agent's RULES;
- ``agent_side.AgentConnection``: sends HELLO and RULES, takes WELCOME and POOL, takes the
  requests and sends the responses.

A method one end may not call is absent from its class, so calling it is a type error (and an
AttributeError), not a check at run time. The asyncio layers (relay/, agent/) only ever call
these methods. ``docs/protocol.md`` describes the wire format, the handshake, stream states and
flow control.

Why this module is longer than ~500 lines: it is one object's state (the frame buffer, the
table of open streams and their windows, the handshake and GOAWAY flags) and the code that
moves it. The receive loop, the stream frames and the send calls all read and write the same
fields on the hot path; splitting them into mixins would only scatter that state.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from typing import ClassVar

from devtunnel.errors import FlowControlError, ProtocolError, StreamClosedError
from devtunnel.protocol import frames as f
from devtunnel.protocol.events import (
    DataReceived,
    Event,
    GoAway,
    PingReceived,
    PongReceived,
    StreamReset,
    WebSocketClosed,
    WebSocketMessageReceived,
    WindowUpdated,
)
from devtunnel.protocol.handshake import (
    DEFAULT_INITIAL_WINDOW,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HEAD_SIZE,
    DEFAULT_MAX_STREAMS,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    PeerLimits,
)
from devtunnel.protocol.state import (
    CLOSED,
    DATA,
    DATA_END,
    DONE,
    FINISHED,
    TRANSITIONS,
    Action,
    Half,
    StreamState,
    advance,
    stream_state,
)

__all__ = [
    "DEFAULT_INITIAL_WINDOW",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_HEAD_SIZE",
    "DEFAULT_MAX_STREAMS",
    "MAX_UNSENT_REPLIES",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Connection",
    "ErrorCode",
    "FrameHandler",
    "Role",
    "StreamRecord",
]

_END_STREAM = f.END_STREAM
_HEADER = f.HEADER

FrameHandler = Callable[[int, int, bytes, list[Event]], None]
"""A frame handler: (flags, stream_id, payload, events to append to)."""

_ONE_WAY_TYPES = (f.HELLO, f.WELCOME, f.REQUEST, f.RESPONSE, f.POOL, f.RULES)
"""Frame types only one end may send; the other end fails the connection on receiving one."""

MAX_UNSENT_REPLIES = 1 << 14
"""Answers to the peer's frames (PONGs, refusals of its streams) that may wait in the send queue,
not yet taken by ``data_to_send``: one more fails the connection ("too many control frames
unanswered"), as HTTP/2 implementations bound the answers to a flood of PINGs they cannot send
(CVE-2019-9512). A shell takes the queue whenever its socket has room, so only a peer that stops
reading what it asks for gets here. Above what one read of a socket (256 KiB, at most 15,420
PINGs) or one ``receive_slice`` can ask for, so a peer that reads is never refused."""


class Role(enum.Enum):
    """Which end of the tunnel a connection is (``Connection.role``)."""

    RELAY = "relay"  # opens streams (one per public request), receives responses
    AGENT = "agent"  # receives requests, sends responses


class ErrorCode(enum.IntEnum):
    """Codes carried by RESET and GOAWAY frames."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    CANCEL = 2  # the public client went away / the stream is no longer wanted
    LOCAL_REFUSED = 3  # the local service refused the connection
    LOCAL_TIMEOUT = 4  # the local service did not answer in time
    LOCAL_ERROR = 5  # the local service broke the connection / sent invalid HTTP
    TOO_LARGE = 6  # a body exceeded a limit
    REFUSED_STREAM = 7  # too many concurrent streams
    AUTH_FAILED = 8  # GOAWAY: token refused (the agent must not retry)
    NAME_TAKEN = 9  # GOAWAY: the name belongs to another token (must not retry)
    UNSUPPORTED_VERSION = 10  # GOAWAY: no common protocol version
    SHUTTING_DOWN = 11  # GOAWAY: relay restarting; reconnect
    NAME_IN_USE = 12  # GOAWAY: a live connection with the same token holds the name; may retry later
    RULES_REFUSED = 13  # GOAWAY: the relay cannot enforce the HELLO's rules (must not retry)
    TOO_MANY_CONNECTIONS = 14  # GOAWAY: the token holds as many agent connections as the relay allows (must not retry)
    CLIENT_TIMEOUT = 15  # RESET: the public client sent its request body too slowly (the relay answered 408)


class StreamRecord:
    """What the protocol keeps of one open stream: the state of each direction and its windows.

    ``local`` is the direction we send, ``remote`` the peer's. Not the shells' stream objects
    (the relay's and the agent's), which pump a stream's bytes; this is only the bookkeeping.
    """

    __slots__ = ("local", "remote", "send_window", "recv_window", "pending", "websocket")

    def __init__(self, local: Half, remote: Half, send_window: int, recv_window: int, websocket: bool) -> None:
        self.local = local
        self.remote = remote
        self.send_window = send_window  # bytes the peer lets us send
        self.recv_window = recv_window  # bytes we let the peer send
        self.pending = 0  # acknowledged by the application, not yet announced in WINDOW_UPDATE
        self.websocket = websocket


def _clip(text: str, limit: int) -> bytes:
    """UTF-8 encode ``text`` and cut it to ``limit`` bytes without splitting a character.

    A lone surrogate (a peer's JSON may hold ``"\\udfff"``, quoted back in a refusal) is sent as
    ``?``: it has no UTF-8 form, and the frame must still go out."""
    raw = text.encode(errors="replace")
    if len(raw) <= limit:
        return raw
    return raw[: max(limit, 0)].decode(errors="ignore").encode()


class Connection(abc.ABC):
    """What both ends of a tunnel connection share. Does no IO; build a ``RelayConnection`` or
    an ``AgentConnection``.

    Usage (both roles): feed received bytes to ``receive_data`` and handle the events it
    returns; after any call, send ``data_to_send()`` to the peer (it batches every queued frame).

    When ``receive_data`` raises ``ProtocolError`` the connection is dead: a GOAWAY carrying the
    error's code and message is queued, so send ``data_to_send()`` once more and close.
    Errors raised by the ``send_*`` methods and ``open_request`` concern only that call: nothing
    was queued and the connection stays usable.

    Attributes:
        role: which end of the tunnel this is.
        version: the negotiated protocol version, None until the handshake settled it.
    """

    role: ClassVar[Role]
    _peer_handshake: ClassVar[str]
    """The frame the peer must send before any other: HELLO to the relay, WELCOME to the agent."""

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        initial_window: int = DEFAULT_INITIAL_WINDOW,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_head_size: int = DEFAULT_MAX_HEAD_SIZE,
        versions: tuple[int, ...] = SUPPORTED_VERSIONS,
        max_send_window: int = f.MAX_WINDOW,
        receive_slice: int | None = None,
    ) -> None:
        """Create the protocol state of one end of a tunnel connection.

        Args:
            max_frame_size: largest non-head frame payload we accept (announced to the peer).
            initial_window: flow-control credit we grant the peer on each new stream.
            max_streams: concurrent streams (relay: opens at most; agent: accepts at most).
            max_head_size: largest HELLO/WELCOME/REQUEST/RESPONSE payload we accept.
            versions: protocol versions this end speaks (the relay picks the highest shared).
            max_send_window: the most credit we use on a stream, whatever the peer grants: a
                peer announcing a huge window cannot make us queue more than this for it.
            receive_slice: the bytes of frames one ``receive_data`` call handles at most (None:
                all it is given). Frames starting past them wait in ``backlog``, unparsed, for
                the next call: a shell handed a message of millions of tiny frames handles it a
                slice per turn of its event loop, never all its events at once.

        Raises:
            ValueError: a limit is out of range.
        """
        settings = PeerLimits(max_frame_size, max_head_size, initial_window, max_streams)
        settings.check()
        if not versions or any(type(v) is not int or v < 1 for v in versions):
            raise ValueError(f"versions must be positive integers, not {versions!r}")
        if type(max_send_window) is not int or not 1 <= max_send_window <= f.MAX_WINDOW:
            raise ValueError(f"max_send_window must be an integer in 1..{f.MAX_WINDOW}, not {max_send_window!r}")
        if receive_slice is not None and (type(receive_slice) is not int or receive_slice < f.HEADER_SIZE):
            raise ValueError(f"receive_slice must be None or an integer of at least {f.HEADER_SIZE}, not {receive_slice!r}")
        self.version: int | None = None
        self._settings = settings
        self._initial_window = initial_window
        self._max_streams = max_streams
        self._versions = tuple(versions)
        self._max_send_window = max_send_window
        # Credit goes back once half the window is consumed: few WINDOW_UPDATEs, no stalls.
        self._ack_threshold = max(1, initial_window // 2)
        # Until the peer's handshake says otherwise, assume it uses the defaults.
        self._peer = PeerLimits()

        self._streams: dict[int, StreamRecord] = {}
        self._last_stream_id = 0  # highest stream id opened so far (always by the relay)
        # Streams we reset recently: the peer's frames for them may still be in flight.
        self._reset_ids: dict[int, None] = {}
        self._reset_memory = max(2 * max_streams, 256)
        self._handshake_sent = False  # agent: HELLO queued; relay: WELCOME queued
        self._handshake_received = False  # relay: HELLO arrived; agent: WELCOME arrived
        self._goaway_sent = False
        self._goaway_received = False
        self._error: ProtocolError | None = None

        self._buffer = bytearray()  # one incomplete frame, never more; sized for it once known
        self._filled = 0  # bytes of it received so far
        # The caller's bytes past the last slice (receive_slice), parsed from _backlog_pos on.
        # Never set together with a buffered frame: the backlog's tail is buffered once reached.
        self._slice = receive_slice
        self._backlog = b""
        self._backlog_pos = 0
        self._out: list[bytes | memoryview] = []  # frames and frame pieces, in order
        self._queued_data = 0  # DATA and WS_MESSAGE payload bytes in _out
        self._replies = 0  # answers to the peer's frames in _out (MAX_UNSENT_REPLIES)

        limits = [max_frame_size] * 256
        for ftype in f.HEAD_TYPES:
            limits[ftype] = max_head_size
        self._limits = limits

        handlers: dict[int, FrameHandler] = {
            f.DATA: self._on_data,
            f.WINDOW_UPDATE: self._on_window_update,
            f.RESET: self._on_reset,
            f.WS_MESSAGE: self._on_ws_message,
            f.WS_CLOSE: self._on_ws_close,
            f.PING: self._on_ping,
            f.PONG: self._on_pong,
            f.GOAWAY: self._on_goaway,
        }
        handlers.update(dict.fromkeys(_ONE_WAY_TYPES, self._wrong_direction))
        handlers.update(self._role_handlers())
        self._ready_handlers = handlers
        # Before the peer's handshake frame only the handshake and GOAWAY may arrive.
        early = {f.HELLO, f.WELCOME, f.GOAWAY}
        self._handlers = {t: (h if t in early else self._too_early) for t, h in handlers.items()}

    @abc.abstractmethod
    def _role_handlers(self) -> dict[int, FrameHandler]:
        """The handlers of the one-way frame types this end receives (the rest are refused)."""

    # -- connection ----------------------------------------------------------------
    def send_goaway(self, code: ErrorCode, reason: str) -> None:
        """Queue a GOAWAY; after it, only frames for already open streams may be sent.

        Only the first GOAWAY is sent; later calls do nothing.
        """
        if self._goaway_sent:
            return
        self._goaway_sent = True
        self._out.append(f.frame(f.GOAWAY, 0, 0, f.U32.pack(code) + _clip(reason, self._peer.max_frame_size - 4)))

    def ping(self, payload: bytes = b"\0" * 8) -> None:
        """Queue a PING (8 bytes); the peer answers with a PongReceived event."""
        if len(payload) != 8:
            raise ValueError(f"a PING carries exactly 8 bytes, not {len(payload)}")
        # The peer refuses a PING that arrives before its handshake frame.
        if not self._handshake_sent:
            raise ProtocolError("cannot ping before the handshake frame was sent")
        self._out.append(f.frame(f.PING, 0, 0, payload))

    # -- streams -----------------------------------------------------------------
    def send_data(self, stream_id: int, data: bytes | memoryview, *, end_stream: bool = False) -> None:
        """Send body bytes (split into frames as needed). Raises FlowControlError if ``len(data)``
        exceeds ``send_window(stream_id)``; raises StreamClosedError if the stream is closed."""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise self._closed_error(stream_id)
        action = DATA_END if end_stream else DATA
        local = TRANSITIONS.get((stream.local, action))
        if local is None:
            local = advance(stream.local, action, stream_id, "we")
        n = len(data)
        if n > stream.send_window:
            raise FlowControlError(
                f"stream {stream_id}: {n} bytes exceed the send window of {stream.send_window}"
            )
        out = self._out
        self._queued_data += n
        size = self._peer.max_frame_size
        if n <= size:
            if n or end_stream:
                out.append(_HEADER.pack(n << 8 | f.DATA, _END_STREAM if end_stream else 0, stream_id))
                out.append(data)
        else:
            view = memoryview(data)
            for start in range(0, n, size):
                chunk = view[start : start + size]
                last = start + size >= n
                out.append(_HEADER.pack(len(chunk) << 8 | f.DATA, _END_STREAM if end_stream and last else 0, stream_id))
                out.append(chunk)  # joined (copied) once, by data_to_send
        stream.send_window -= n
        stream.local = local
        if end_stream and stream.remote in FINISHED:
            del self._streams[stream_id]

    def send_ws_message(self, stream_id: int, data: bytes, *, text: bool, fin: bool = True) -> None:
        """Send a WebSocket message (or fragment); counts against the send window.

        Data larger than the peer's frame size goes out as several fragments.

        Raises:
            FlowControlError: ``len(data)`` exceeds ``send_window(stream_id)``.
            StreamClosedError: the stream is closed or we already sent WS_CLOSE.
            ProtocolError: the stream is not an accepted WebSocket.
        """
        stream = self._open_stream(stream_id)
        advance(stream.local, Action.WS_MESSAGE, stream_id, "we")
        n = len(data)
        if n > stream.send_window:
            raise FlowControlError(
                f"stream {stream_id}: {n} bytes exceed the send window of {stream.send_window}"
            )
        base = f.TEXT if text else 0
        size = self._peer.max_frame_size
        out = self._out
        self._queued_data += n
        if n <= size:
            out.append(_HEADER.pack(n << 8 | f.WS_MESSAGE, base | (f.FIN if fin else 0), stream_id))
            out.append(data)
        else:
            view = memoryview(data)
            for start in range(0, n, size):
                chunk = view[start : start + size]
                flags = base | (f.FIN if fin and start + size >= n else 0)
                out.append(_HEADER.pack(len(chunk) << 8 | f.WS_MESSAGE, flags, stream_id))
                out.append(chunk)  # joined (copied) once, by data_to_send
        stream.send_window -= n

    def send_ws_close(self, stream_id: int, code: int, reason: str = "") -> None:
        """Close our side of a WebSocket stream."""
        if not 0 <= code <= 0xFFFF:
            raise ValueError(f"WebSocket close code {code} does not fit 16 bits")
        stream = self._open_stream(stream_id)
        stream.local = advance(stream.local, Action.WS_CLOSE, stream_id, "we")
        payload = f.U16.pack(code) + _clip(reason, self._peer.max_frame_size - 2)
        self._out.append(f.frame(f.WS_CLOSE, 0, stream_id, payload))
        if stream.remote in FINISHED:
            del self._streams[stream_id]

    def reset_stream(self, stream_id: int, code: ErrorCode, reason: str = "") -> None:
        """Abandon a stream; a no-op if it is already closed."""
        if self._streams.pop(stream_id, None) is None:
            return
        self._remember_reset(stream_id)
        self._out.append(
            f.frame(f.RESET, 0, stream_id, f.U32.pack(code) + _clip(reason, self._peer.max_frame_size - 4))
        )

    def send_window(self, stream_id: int) -> int:
        """Bytes we may still send on ``stream_id`` before a WindowUpdated event (0 if closed)."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.send_window

    def acknowledge(self, stream_id: int, n: int, *, flush: bool = False) -> None:
        """Give ``n`` consumed bytes of credit back to the peer (batched into WINDOW_UPDATE).

        A WINDOW_UPDATE is queued once the acknowledged bytes reach half the window, or at
        once with ``flush=True``. Acknowledging a closed stream does nothing.

        Raises:
            ValueError: ``n`` is negative or more than was received and not yet acknowledged.
        """
        if n < 0:
            raise ValueError(f"cannot acknowledge a negative byte count ({n})")
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        outstanding = self._initial_window - stream.recv_window - stream.pending
        if n > outstanding:
            raise ValueError(f"stream {stream_id}: acknowledged {n} bytes but only {outstanding} are unacknowledged")
        remote = stream.remote
        if remote is CLOSED or (remote is DONE and not stream.websocket):
            return  # the peer sends nothing more: credit would be wasted bytes
        pending = stream.pending + n
        if pending and (pending >= self._ack_threshold or flush):
            self._out.append(_HEADER.pack(4 << 8 | f.WINDOW_UPDATE, 0, stream_id) + f.U32.pack(pending))
            stream.recv_window += pending
            pending = 0
        stream.pending = pending

    def state(self, stream_id: int) -> StreamState:
        """The HTTP/2-style state of a stream as seen from this end."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream_state(stream.local, stream.remote)
        if stream_id == 0 or stream_id > self._last_stream_id:
            return StreamState.IDLE
        return StreamState.CLOSED

    # -- IO boundary -------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed received bytes (any split; bytes, bytearray or memoryview); return complete
        events. Raises ProtocolError.

        With a ``receive_slice``, frames past the slice wait in ``backlog``: call again with
        ``b""`` until ``backlog`` is 0. (More bytes may come meanwhile: they are handled after
        the backlog, joined to what is left of it, a copy.)

        The annotation names each type taken: compiled with mypyc, a parameter refuses what
        its annotation does not name (TypeError), where pure Python took any of them."""
        if self._error is not None:
            raise ProtocolError(f"the tunnel connection already failed: {self._error}", code=self._error.code)
        backlog = self._backlog
        if not data and not backlog:
            return []
        events: list[Event] = []
        try:
            if backlog:  # frames a slice left go first (no frame is buffered meanwhile)
                pos = self._backlog_pos
                if data:
                    src = backlog[pos:] + data
                    pos = 0
                else:
                    src = backlog
                self._backlog = b""
            else:
                pos = self._complete_buffered(data, events) if self._filled else 0
                if pos < 0:
                    return events
                # Parse straight from the caller's bytes: each payload is copied once, into its event.
                src = data if type(data) is bytes else bytes(data)
            size = len(src)
            end = pos
            limits = self._limits
            unpack = _HEADER.unpack_from
            last = size - f.HEADER_SIZE  # the last offset a whole header starts at
            stop = last
            slice_size = self._slice
            if slice_size is not None and last - pos >= slice_size:
                stop = pos + slice_size - 1  # frames starting in the slice are handled, whole
            while pos <= stop:
                first, flags, stream_id = unpack(src, pos)
                length = first >> 8
                ftype = first & 0xFF
                if length > limits[ftype] or stream_id > f.MAX_STREAM_ID:
                    self._check_header(length, ftype, stream_id)
                end = pos + 9 + length
                if end > size:
                    break
                handler = self._handlers.get(ftype)
                if handler is not None:  # unknown frame types are skipped
                    handler(flags, stream_id, src[pos + 9 : end], events)
                pos = end
            tail = size - pos
            if tail and pos > stop and stop < last:
                # The slice is done: the frames after it wait, unparsed and uncopied.
                self._backlog = src
                self._backlog_pos = pos
            elif tail:
                # Keep the incomplete frame in a buffer of exactly its size (just the header's
                # size while the length is still unknown): it never grows piece by piece.
                buffer = bytearray(end - pos if tail >= 9 else f.HEADER_SIZE)
                buffer[:tail] = memoryview(src)[pos:]
                self._buffer = buffer
                self._filled = tail
        except ProtocolError as exc:
            self._fail(exc)
            raise
        return events

    def _complete_buffered(self, data: bytes | bytearray | memoryview, events: list[Event]) -> int:
        """Add ``data`` to the buffered frame; once it is complete, handle it.

        Returns how many bytes of ``data`` it took, or -1 if the frame is still incomplete.
        """
        buffer = self._buffer
        filled = self._filled
        view = memoryview(data)
        size = len(view)
        used = 0
        while True:
            take = min(len(buffer) - filled, size - used)
            buffer[filled : filled + take] = view[used : used + take]
            filled += take
            used += take
            if filled < len(buffer):
                self._filled = filled
                return -1
            first, flags, stream_id = _HEADER.unpack_from(buffer)
            length = first >> 8
            ftype = first & 0xFF
            if len(buffer) == f.HEADER_SIZE:
                # The header just completed: check it before making room for the payload.
                self._check_header(length, ftype, stream_id)
                if length:
                    grown = bytearray(f.HEADER_SIZE + length)
                    grown[: f.HEADER_SIZE] = buffer
                    buffer = self._buffer = grown
                    continue
            break
        self._buffer = bytearray()
        self._filled = 0
        handler = self._handlers.get(ftype)
        if handler is not None:
            with memoryview(buffer) as frame:
                payload = bytes(frame[f.HEADER_SIZE :])
            handler(flags, stream_id, payload, events)
        return used

    def _check_header(self, length: int, ftype: int, stream_id: int) -> None:
        """Refuse a frame by its header alone: too long for its type, or a reserved bit set."""
        limit = self._limits[ftype]
        if length > limit:
            raise ProtocolError(
                f"frame of type {ftype} on stream {stream_id & f.MAX_STREAM_ID} announces {length} bytes,"
                f" more than the limit of {limit}"
            )
        if stream_id > f.MAX_STREAM_ID:
            raise ProtocolError("the reserved high bit of a stream id is set")

    def data_to_send(self) -> bytes:
        """Every byte queued since the last call (may be empty)."""
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        self._queued_data = 0
        self._replies = 0
        return data

    @property
    def wants_to_send(self) -> bool:
        """True when frames are queued for ``data_to_send``."""
        return bool(self._out)

    @property
    def queued_data(self) -> int:
        """DATA and WS_MESSAGE payload bytes queued and not yet taken by ``data_to_send``."""
        return self._queued_data

    @property
    def new_stream_window(self) -> int:
        """Bytes we may send on a stream opened now, before any WindowUpdated: the peer's
        ``initial_window``, at most our ``max_send_window``."""
        return min(self._peer.initial_window, self._max_send_window)

    @property
    def open_streams(self) -> int:
        """Number of streams not yet closed."""
        return len(self._streams)

    @property
    def handshake_complete(self) -> bool:
        """True once HELLO and WELCOME were both exchanged."""
        return self._handshake_received and self._handshake_sent

    @property
    def backlog(self) -> int:
        """Bytes of received frames left for the next ``receive_data`` call (``receive_slice``)."""
        return len(self._backlog) - self._backlog_pos if self._backlog else 0

    @property
    def buffered(self) -> int:
        """Memory held for an incomplete frame: its whole size once its header has arrived.

        Never more than the largest frame this side accepts plus its 9-byte header.
        """
        return len(self._buffer)

    # -- helpers -----------------------------------------------------------------
    def _queue_head(self, ftype: int, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) > self._peer.max_head_size:
            raise ProtocolError(
                f"a {len(payload)}-byte head exceeds the peer's limit of {self._peer.max_head_size}",
                code=ErrorCode.TOO_LARGE,
            )
        out = self._out
        out.append(_HEADER.pack(len(payload) << 8 | ftype, flags, stream_id))
        out.append(payload)

    def _open_stream(self, stream_id: int) -> StreamRecord:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise self._closed_error(stream_id)
        return stream

    def _closed_error(self, stream_id: int) -> StreamClosedError:
        if stream_id <= 0 or stream_id > self._last_stream_id:
            return StreamClosedError(f"stream {stream_id} was never opened")
        return StreamClosedError(f"stream {stream_id} is closed")

    def _remember_reset(self, stream_id: int) -> None:
        reset = self._reset_ids
        if len(reset) >= self._reset_memory:
            del reset[next(iter(reset))]
        reset[stream_id] = None

    def _reply(self, frame: bytes) -> None:
        """Queue an answer to one of the peer's frames, at most ``MAX_UNSENT_REPLIES`` of them
        until ``data_to_send`` takes them."""
        replies = self._replies + 1
        if replies > MAX_UNSENT_REPLIES:
            # The peer reads nothing: what waits would never be read in time. Dropped, the
            # GOAWAY goes first (``_fail``) and the memory is let go at once.
            self._out.clear()
            self._queued_data = 0
            self._replies = 0
            raise ProtocolError(
                f"too many control frames unanswered: the peer does not read the answers to its frames"
                f" (PONGs, refusals): more than {MAX_UNSENT_REPLIES} wait to be sent"
            )
        self._replies = replies
        self._out.append(frame)

    def _fail(self, exc: ProtocolError) -> None:
        self._error = exc
        self._buffer = bytearray()
        self._filled = 0
        self._backlog = b""
        try:
            code = ErrorCode(exc.code)
        except ValueError:
            code = ErrorCode.PROTOCOL_ERROR
        self.send_goaway(code, str(exc))

    def _handshake_done(self) -> None:
        self._handshake_received = True
        self._handlers = self._ready_handlers

    def _stream_for(self, stream_id: int, what: str) -> StreamRecord | None:
        """The open stream a received frame belongs to; None when the frame is to be ignored."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        if stream_id == 0:
            raise ProtocolError(f"{what} frame on stream 0")
        if stream_id > self._last_stream_id:
            raise ProtocolError(f"{what} frame on stream {stream_id}, which was never opened")
        if stream_id in self._reset_ids:
            return None  # it crossed our RESET on the wire
        raise StreamClosedError(f"{what} frame on closed stream {stream_id}")

    # -- frame handlers: (flags, stream_id, payload, events) -------------------------
    def _too_early(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        raise ProtocolError(f"a frame arrived before the {self._peer_handshake} that must come first")

    def _wrong_direction(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        raise ProtocolError(f"the {self.role.value} received a frame only it may send")

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id:
            raise ProtocolError("GOAWAY frame on a stream other than 0")
        code, reason = f.decode_code_reason(payload, "GOAWAY")
        self._goaway_received = True
        events.append(GoAway(code, reason))

    def _on_ping(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id or len(payload) != 8:
            raise ProtocolError("PING frame must carry 8 bytes on stream 0")
        self._reply(f.frame(f.PONG, 0, 0, payload))
        events.append(PingReceived(payload))

    def _on_pong(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id or len(payload) != 8:
            raise ProtocolError("PONG frame must carry 8 bytes on stream 0")
        events.append(PongReceived(payload))

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        stream = self._streams.get(stream_id) or self._stream_for(stream_id, "DATA")
        if stream is None:
            return
        end_stream = bool(flags & _END_STREAM)
        action = DATA_END if end_stream else DATA
        remote = TRANSITIONS.get((stream.remote, action)) or advance(stream.remote, action, stream_id, "the peer")
        n = len(payload)
        if n > stream.recv_window:
            raise FlowControlError(f"stream {stream_id}: {n} bytes of DATA exceed the window of {stream.recv_window}")
        stream.recv_window -= n
        stream.remote = remote
        if end_stream and stream.local in FINISHED:
            del self._streams[stream_id]
        events.append(DataReceived(stream_id, payload, end_stream))

    def _on_ws_message(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        stream = self._stream_for(stream_id, "WS_MESSAGE")
        if stream is None:
            return
        advance(stream.remote, Action.WS_MESSAGE, stream_id, "the peer")
        n = len(payload)
        if n > stream.recv_window:
            raise FlowControlError(
                f"stream {stream_id}: {n} bytes of WS_MESSAGE exceed the window of {stream.recv_window}"
            )
        stream.recv_window -= n
        events.append(WebSocketMessageReceived(stream_id, payload, bool(flags & f.TEXT), bool(flags & f.FIN)))

    def _on_ws_close(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        stream = self._stream_for(stream_id, "WS_CLOSE")
        if stream is None:
            return
        code, reason = f.decode_code_reason(payload, "WS_CLOSE", 2)
        stream.remote = advance(stream.remote, Action.WS_CLOSE, stream_id, "the peer")
        if stream.local in FINISHED:
            del self._streams[stream_id]
        events.append(WebSocketClosed(stream_id, code, reason))

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise ProtocolError("WINDOW_UPDATE frame must carry 4 bytes")
        if stream_id == 0 or stream_id > self._last_stream_id:
            raise ProtocolError(f"WINDOW_UPDATE frame on stream {stream_id}, which was never opened")
        (increment,) = f.U32.unpack(payload)
        if increment == 0:
            raise ProtocolError(f"WINDOW_UPDATE of 0 bytes on stream {stream_id}")
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # credit for a stream that closed meanwhile
        window = stream.send_window + increment
        if window > f.MAX_WINDOW:
            raise FlowControlError(f"stream {stream_id}: WINDOW_UPDATE grows the window beyond 2^31-1")
        stream.send_window = min(window, self._max_send_window)
        events.append(WindowUpdated(stream_id, increment))

    def _on_reset(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0 or stream_id > self._last_stream_id:
            raise ProtocolError(f"RESET frame on stream {stream_id}, which was never opened")
        code, reason = f.decode_code_reason(payload, "RESET")
        if self._streams.pop(stream_id, None) is None:
            return  # both sides abandoned it, or it closed meanwhile
        events.append(StreamReset(stream_id, code, reason))
