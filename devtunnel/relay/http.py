"""uvicorn's protocol classes with what a public relay needs on top.

uvicorn's httptools protocol neither limits the size of a request head nor times how long a
client takes to send it, so a client could hold a connection open forever or make the parser
buffer megabytes of header. ``HeadLimitedHttpProtocol`` adds both, and lets the application
learn when the client connection is lost or abort it. ``DeadPeerWebSocketProtocol`` aborts a
connection whose keepalive ping went unanswered, instead of waiting for a dead peer to drain
its write buffer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from devtunnel.relay.asgi import PLAIN_TYPE, TARGET_EXTENSION
from devtunnel.relay.descriptors import Counted, OpenConnections
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.pending import DROPPED_PENDING, REFUSAL_GRACE, RETRY_AFTER, Droppable, PendingConnections
from devtunnel.values.sizes import format_size
from devtunnel.values.http1 import connection_tokens, field_value, is_token
from devtunnel.values.absolute_target import authority_as_host
from devtunnel.values.request_head import answer_text, head_problem

#: Key of the ASGI scope extension that carries the client connection (``HeadLimitedHttpProtocol``).
CONNECTION_EXTENSION = "devtunnel.connection"
#: Key of the ASGI scope extension with the request headers as received (names not lowercased).
RAW_HEADERS_EXTENSION = "devtunnel.raw_headers"
# Protocols a relay has not given its own log (``configured``, ``logging_to``) log peers' mistakes here.
_PEER_ERRORS = PeerErrorLog(logging.getLogger("devtunnel.relay"))


def _address(client: tuple[str, int] | None) -> str:
    return client[0] if client else "?"


class _HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing an oversized head."""


class _BadVersion(Exception):
    """Raised by the parser's head callback for an HTTP version other than 1.0 and 1.1."""


class _BadHead(Exception):
    """Raised inside a parser callback to stop parsing a head that must not be forwarded."""


class _TrailerTooLarge(Exception):
    """Raised inside a parser callback to stop parsing an oversized trailer section."""


class _DrainOver(Exception):
    """Raised inside a parser callback to stop parsing the body of an answered request past
    the bound on what is read after an answer (``HeadLimitedHttpProtocol._dropped``)."""


class _Drain:
    """What a connection still reads after answering a request whose body was arriving
    (``HeadLimitedHttpProtocol._drain_body`` and ``_linger``): bytes left to read and drop, the
    loop time it ends at the latest, and when the last bytes came."""

    __slots__ = ("left", "until", "last", "timer")

    def __init__(self, now: float, left: int, until: float) -> None:
        self.left = left
        self.until = until
        self.last = now
        self.timer: asyncio.TimerHandle | None = None


class BodyTap:
    """What the connection reads of an answered request's body while it drains it after the
    answer (``HeadLimitedHttpProtocol.tap_body``): its first ``keep`` bytes are kept, all are
    counted, and ``done(kept, read, ended)`` is called once the reading stops (``ended``: the
    body came to its end). Reading it costs nothing more: the connection reads it anyway, within
    the same bounds, and drops it.

    ``left``: the body bytes still to come by the request's Content-Length (-1: chunked). It
    follows a body read unparsed, as a connection that closes after its answer reads the rest
    (``_linger``): a body of known length is its next ``left`` bytes; a chunked one is not read.
    """

    __slots__ = ("keep", "kept", "read", "left", "_done")

    def __init__(self, keep: int, left: int, done: Callable[[bytes, int, bool], None]) -> None:
        self.keep = keep
        self.kept = bytearray()
        self.read = 0
        self.left = left
        self._done: Callable[[bytes, int, bool], None] | None = done

    def add(self, data: bytes) -> None:
        """Body bytes the connection read (and drops)."""
        self.read += len(data)
        room = self.keep - len(self.kept)
        if room > 0:
            self.kept += data[:room]

    def finish(self, ended: bool) -> None:
        """The reading stopped (``ended``: at the body's end); calls ``done`` the first time only."""
        done, self._done = self._done, None
        if done is None:
            return
        try:
            done(bytes(self.kept), self.read, ended)
        except Exception:  # a defect must not escape into the protocol's callbacks
            logging.getLogger("devtunnel.relay").exception("the body read after an answer could not be handed on")


# Where a chunked body's parsing stands at the end of a read (``HeadLimitedHttpProtocol._chunks``),
# for the bound on its trailer section:
_NO_CHUNK_HEADER = 0  # no chunk header waits for its data: not in a chunked body, or body bytes came last
_CHUNK_HEADER_HERE = 1  # the read parsed a chunk header and no body bytes after it
_FIELD_HERE = 2  # the read began a trailer field (the one the parser holds, unreported, at its end)
_CARRIED = 3  # one of the two before was true at the end of an earlier read and nothing has changed since
# The start of a trailer field line (a token, then a colon); never of a chunk's size line.
_FIELD_LINE = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+:")
# The end of a request line: the version and CRLF (llhttp takes no other line end).
_VERSION_LINE_END = re.compile(rb" HTTP/[0-9]\.[0-9]\r\n")
_VERSION_AND_CRLF = len(b" HTTP/1.1\r\n")  # the least a request line's target is followed by
# Where the parser stands in the messages of a connection (``HeadLimitedHttpProtocol._in_head``):
_BODY = 0  # past a head: in its body, or its trailer (falsy: the only state a trailer field comes in)
_HEAD = 1  # in a head that was in progress when the read began, or began in it behind blank lines only
_BEHIND = 2  # in a head that began in this read behind the end of another message (_bound_head)
_BETWEEN = 3  # no message in progress since an earlier read: a new connection, or one between requests
_ENDED = 4  # a message ended in this read and no other began after it
_TURNED_AWAY = 5  # refused before a byte was read (relay.pending): its first bytes get 429
_TOO_MANY_OPEN = 6  # refused before a byte was read (relay.descriptors): its first bytes get 429
_NOTHING_OPEN = (0, 0, 0)
# The first byte of a request line after blank lines (_Walk.head_ends).
_NOT_CR_LF = re.compile(rb"[^\r\n]")
# The end of a chunked body: its last chunk's size line, trailer fields, the empty line (_Walk.message_end).
_LAST_CHUNK_END = re.compile(rb"(?:^|\r\n)0+(?:;[^\r\n]*)?\r\n(?:[^\r\n]+\r\n)*\r\n")


class _Walk:
    """Where the parser stands in one read, followed callback by callback: made for a read in
    which a head could pass ``max_head`` unseen (``HeadLimitedHttpProtocol._walk_for``).

    llhttp reports what it keeps (target, field names and values, body bytes), never where in
    the read it is; the bytes it skips (spaces between a request line's parts and before a
    field's value, blank lines between requests) are found by position: ``pos`` is the end of
    what the callbacks so far account for (a head's end, body bytes, a chunk's size line, a
    message's end), ``head`` where the bytes counted for the head in progress begin in the read
    (at the end of the message before it, so the blank lines after that count; below 0 for a
    head that began in an earlier read, which ended with ``-head - 1`` bytes of CR and LF), ``carried``
    what was counted for it in earlier reads. ``pos`` is ``None`` while a read that began inside
    a chunked body is in it (its framing is not followed across reads); where that body ends is
    taken to be the earliest place it can end, so what follows it counts in full, or more.
    """

    __slots__ = ("data", "pos", "head", "carried", "after_data", "chunked")

    def __init__(self, data: bytes, pos: int | None, head: int | None, carried: int, chunked: bool = False) -> None:
        self.data = data
        self.pos = pos
        self.head = head  # None: the next head begins where the message in progress ends (message_end)
        self.carried = carried
        self.after_data = False  # chunk data came last: its CRLF comes before the next size line
        self.chunked = chunked  # the message in progress has a chunked body: it ends after its trailer section

    def message_end(self) -> int | None:
        """Where the message in progress ends, found when asked (a head behind it ended, or the
        read did): after its body bytes, or after the empty line that ends a chunked body's
        trailer section (the earliest place a last chunk and trailer end, if ``pos`` is not
        known). Blank lines after it count toward the next head."""
        pos = self.pos
        if self.chunked:
            self.chunked = False
            data = self.data
            if pos is None:
                last = _LAST_CHUNK_END.search(data)
                pos = last.end() if last is not None else 0
            elif data.startswith(b"\r\n", pos):
                pos += 2
            else:
                found = data.find(b"\r\n\r\n", pos)
                pos = found + 4 if found >= 0 else None
            self.pos = pos
        return pos

    def head_ends(self) -> int | None:
        """The bytes counted for the head that just ended (``on_headers_complete``), its end
        becoming ``pos``; None if where it began in this read is not known."""
        data, head = self.data, self.head
        if head is None:
            head = self.message_end()
        self.head = None
        self.after_data = False
        end: int | None = None
        counted = self.carried
        self.carried = 0
        if head is not None and head < 0:  # begun in an earlier read, which ended with -head - 1 of CR LF CR
            tail = b"\r\n\r"[:-head - 1]
            found = (tail + data[:4]).find(b"\r\n\r\n") if tail else -1
            if found >= 0:
                end = found + 4 - len(tail)  # the empty line ends across the two reads
            else:
                found = data.find(b"\r\n\r\n")
                end = found + 4 if found >= 0 else None
        elif head is not None:
            first = _NOT_CR_LF.search(data, head)  # the request line, behind blank lines (they count)
            found = data.find(b"\r\n\r\n", first.start()) if first is not None else -1
            end = found + 4 if found >= 0 else None
            counted -= head
        self.pos = end
        return None if end is None else counted + end


_METHOD_SHOWN = 64
"""Bytes of a read's first word looked at to tell a method token from garbage (``_parse_failed``)."""
_UNKNOWN_METHOD = (
    "the relay does not carry this request method: it forwards the methods its HTTP parser (llhttp) "
    "knows, in capitals (GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE, PURGE, QUERY, WebDAV's "
    "and others); see docs/relay.md\n"
)


def _plain_response(status_line: bytes, text: str) -> bytes:
    body = text.encode()
    return b"".join(
        [
            status_line,
            b"".join(b"%s: %s\r\n" % field for field in PLAIN_TYPE),
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class _Unwaited:
    """The ``message_event`` of a ``DirectCycle``.

    uvicorn makes an ``asyncio.Event`` for every request, which only its ``receive()`` waits
    on; a request the direct path answers never calls ``receive()``. The cycle of a task gets
    a real one (``DirectCycle.task_cycle``, set if the body is there).
    """

    __slots__ = ()

    def set(self) -> None:
        pass


_UNWAITED: Any = _Unwaited()

UNTIL_CLOSE = 1 << 62
"""A cycle's ``expected_content_length`` once its response turned out to end with the
connection: a response without a length to an HTTP/1.0 client, which reads no chunked coding
(RFC 9112 6.1; nginx and h11 answer such a client so, uvicorn chunks). Larger than any body, so
the checks of a body against its length pass; ``until_close`` tells it from a length."""


def until_close(expected_content_length: int) -> bool:
    """Whether a cycle with this ``expected_content_length`` writes a body ended by the close
    (``UNTIL_CLOSE``, less what was written of it)."""
    return expected_content_length > UNTIL_CLOSE >> 1


def frame_http10(cycle: Any, unframed: bool) -> None:
    """Frame the response to an HTTP/1.0 request on ``cycle`` (uvicorn's or a ``DirectCycle``)
    as such a client reads it: a body without a length (``unframed``) ends with the connection
    (``UNTIL_CLOSE``), which then cannot be kept alive. A connection still kept alive after this
    (the client asked for it, the response has a length) is said to be: the caller writes
    ``Connection: keep-alive``, without which an HTTP/1.0 client takes it to close, as nginx and
    Go's server write it."""
    if unframed:
        cycle.chunked_encoding = False
        cycle.expected_content_length = UNTIL_CLOSE
        cycle.keep_alive = False


def not_modified(cycle: Any) -> None:
    """Frame a 304 whose head was written on ``cycle`` (uvicorn's or a ``DirectCycle``): its
    Content-Length, written as the service sent it, is the length the 200 would have had (RFC
    9110 8.6), and no body follows, where uvicorn would wait for that many bytes."""
    cycle.expected_content_length = 0


def _framing(headers: Any) -> tuple[bool, bool]:
    """Whether response ``headers`` frame the body as uvicorn's send reads them (a
    Content-Length, or chunked Transfer-Encoding), and whether a Connection field says close."""
    framed = close = False
    for name, value in headers:
        name = name.lower()
        if name == b"content-length" or (name == b"transfer-encoding" and value.lower() == b"chunked"):
            framed = True
        elif name == b"connection" and b"close" in connection_tokens(value):
            close = True
    return framed, close


class Http10Cycle(RequestResponseCycle):
    """uvicorn's cycle for an HTTP/1.0 request, framing its response as ``frame_http10`` says
    (uvicorn chunks a body without a length, and keeps no HTTP/1.0 connection alive): as
    ``http_direct.response_head`` writes it on the direct path."""

    async def send(self, message: Any) -> None:
        if not self.response_started:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                framed, close = _framing(headers)
                frame_http10(self, not framed and self.scope["method"] != "HEAD" and message["status"] not in (204, 304))
                if self.keep_alive and not close:
                    message = {**message, "headers": [*headers, (b"connection", b"keep-alive")]}
        elif until_close(self.expected_content_length) and not message.get("more_body", False):
            self.expected_content_length = len(message.get("body", b""))  # its last bytes: all that is left
        await super().send(message)


class DirectCycle:
    """A request's response cycle until an ASGI task is started for it: uvicorn's
    ``RequestResponseCycle``'s fields, without its methods, made positionally, and the
    request's parts (method, version, target, headers) its ASGI scope is made of.

    The parser callbacks make one of these for every request, and the direct path
    (``http_direct``) answers most requests on it alone; ``task_cycle`` makes the
    ``RequestResponseCycle`` uvicorn's task runs on only when one is started (``_launch``).
    uvicorn's cycle is a class with an instance dict, called with eleven keywords; its scope a
    dict of fourteen keys and three more dicts, about 7,000 instructions a request made and
    freed. ``scope`` makes the very dict uvicorn's callbacks make, the first time it is asked
    for (a task, the rules, a log line).
    """

    __slots__ = (
        "_scope", "transport", "flow", "logger", "access_logger", "access_log", "default_headers", "message_event",
        "on_response", "disconnected", "keep_alive", "waiting_for_100_continue", "body", "more_body",
        "response_started", "response_complete", "chunked_encoding", "expected_content_length",
        "_protocol", "method", "http_version", "path", "raw_path", "query_string", "target", "headers", "raw_headers",
    )
    #: The fields that change while a request is parsed and answered (the rest are set once).
    STATE = (
        "disconnected", "keep_alive", "waiting_for_100_continue", "body", "more_body", "response_started",
        "response_complete", "chunked_encoding", "expected_content_length",
    )

    def __init__(
        self,
        protocol: HeadLimitedHttpProtocol,
        method: str,
        http_version: str,
        path: str,
        raw_path: bytes,
        query_string: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        raw_headers: list[tuple[bytes, bytes]],
        expect_100_continue: bool,
        keep_alive: bool,
    ) -> None:
        self._protocol = protocol
        self.method = method
        self.http_version = http_version
        self.path = path  # root_path + the decoded path: scope["path"]
        self.raw_path = raw_path  # root_path + the path as sent: scope["raw_path"]
        self.query_string = query_string
        self.target = target  # root_path + the target as sent (an empty query's ? kept): TARGET_EXTENSION
        self.headers = headers  # names lowercased: scope["headers"]
        self.raw_headers = raw_headers  # as received: RAW_HEADERS_EXTENSION
        self._scope: Any = None
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.logger = protocol.logger
        self.access_logger = protocol.access_logger
        self.access_log = protocol.access_log
        self.default_headers = protocol.server_state.default_headers
        self.message_event: Any = _UNWAITED  # only uvicorn's receive() waits on it: a task's cycle gets a real one
        self.on_response = protocol.on_response_complete
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.body = bytearray()
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: bool | None = None
        self.expected_content_length = 0

    @property
    def scope(self) -> Any:
        """The request's ASGI scope, as uvicorn's parser callbacks make it (made once, when first asked for)."""
        scope = self._scope
        if scope is None:
            scope = self._protocol.request_scope(self.method, self.http_version, self.headers, self.raw_headers,
                                                 self.target)
            scope["path"] = self.path
            scope["raw_path"] = self.raw_path
            scope["query_string"] = self.query_string
            self._scope = scope
        return scope

    def task_cycle(self) -> RequestResponseCycle:
        """uvicorn's cycle for this request, as its parser callbacks would have made it and
        in the state this one is in now, with an ``asyncio.Event`` set if the body is there."""
        event = asyncio.Event()
        if self.body or not self.more_body or self.disconnected:
            event.set()
        cycle = (Http10Cycle if self.http_version == "1.0" else RequestResponseCycle)(
            scope=self.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.default_headers,
            message_event=event,
            expect_100_continue=self.waiting_for_100_continue,
            keep_alive=self.keep_alive,
            on_response=self.on_response,
        )
        for name in self.STATE:
            setattr(cycle, name, getattr(self, name))
        return cycle


class _HeadWithBody:
    """The transport a response cycle answering in an ASGI task writes to: the response head
    waits for the first body bytes written in the same loop iteration and goes out with them
    in one system call. (The direct path writes them together itself: ``http_direct``.)

    uvicorn writes the head and the body of a response separately; on loopback each write is a
    send() and a TCP segment of its own. A head with no body right behind it is written once the
    loop has run the other callbacks ready now, so nothing waits longer than that.
    """

    __slots__ = ("_transport", "_loop", "_held", "_started", "_protocol")

    def __init__(self, protocol: HeadLimitedHttpProtocol) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._loop = protocol.loop
        self._held: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif not self._started:
            self._started = True
            self._held = data
            self._loop.call_soon(self._release)
        else:
            self._transport.write(data)

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._release()
        self._protocol.close_answered()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class HeadLimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head size limit, a head timeout and a lost-hook.

    A head larger than ``max_head`` bytes is answered with 431 (every byte received for it
    counts, blank lines before it and spaces the parser skips included, while it is incomplete:
    ``_bound_head``, and when it comes whole in one read: ``_Walk``), or 414 when its request
    line alone is (a target too long: ``_refuse_head``); a client that has not sent a complete head ``head_timeout`` seconds after
    connecting (or after starting the head of a keep-alive request) is dropped, with 408 once it
    has begun a request line. Configure both with ``configured()``.

    The ASGI scope of every request carries the headers as received (uvicorn lowercases the
    names in ``scope["headers"]``) under ``RAW_HEADERS_EXTENSION``, and this protocol under
    ``CONNECTION_EXTENSION`` so the
    application can set ``lost_callback`` (called once if the client connection is lost; one
    request runs at a time on a connection, so one slot is enough) and call ``abort()``.

    ``direct``, when configured, is offered each request before uvicorn starts an ASGI task for
    it: it returns True when it took the request over (``http_direct.DirectExchange`` answers
    it from callbacks, through the same response cycle). A request whose head arrives in a
    read is offered once that whole read is parsed, so a body that came with the head is there.

    Every head is checked before anything routes it (``values.request_head.head_problem``):
    a target that is not origin-form, two Host headers or an upgrade request with a body get
    400 and the connection closes. A target in absolute-form (``http://host/x``) is read as a
    server reads it first (``_absolute_form``): origin-form, its authority the Host. Trailer
    fields of a chunked body are dropped (they never join the headers) and bounded like a
    head. A request asking to switch to a protocol other than WebSocket is answered as plain
    HTTP, then the connection closes.

    The parser callbacks are uvicorn's, copied with these checks in them; uvicorn's
    ``asyncio.Event`` per request is made only for a request an ASGI task answers, and one
    keep-alive timer serves the successive requests of a connection (``on_response_complete``).
    """

    max_head: int = 64 * 1024
    head_timeout: float = 10.0
    direct: Callable[[HeadLimitedHttpProtocol, DirectCycle], bool] | None = None
    peer_errors: PeerErrorLog = _PEER_ERRORS
    pending: PendingConnections | None = None
    """Where the connection counts while it waits for a request head: from its start, and while
    kept alive between requests when the relay is crowded, until the head is complete (``relay.pending``)."""
    open_connections: OpenConnections | None = None
    """Where the connection counts from its accept to its close (``relay.descriptors``): past its
    address's share it is refused; handed over to the WebSocket it may become."""
    _open_key: str | None = None
    """Its address key while ``open_connections`` counts it (``OpenConnections.opened``)."""
    linger_bytes: int = 64 << 20
    """The most bytes read (and dropped) from a client after answering a request whose body was
    still arriving, before the connection closes (``_drain_body``, ``_linger``)."""
    linger_time: float = 30.0
    """The most seconds spent reading them (nginx's ``lingering_time``)."""
    linger_quiet: float = 5.0
    """Seconds without a byte from the client after which that reading ends (nginx's ``lingering_timeout``)."""
    head_linger_bytes: int = 64 << 10
    """After the relay's own answer to a head (408, 400, 414, 431, 501: ``_answer_and_close``): the most
    bytes read (and dropped) from a client still sending, so that the answer is read rather than
    lost to a reset."""
    head_linger_time: float = 2.0
    """... and the most seconds (a client that trickles its head is held this much longer at most)."""
    _drain: _Drain | None = None
    """Set while the connection reads and drops the rest of an answered request (a class default:
    an ordinary connection's instance holds no such attribute)."""
    _tap: BodyTap | None = None
    """Given what that reading reads of the answered request's body (``tap_body``; a class default too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost_callback: Callable[[], None] | None = None
        self.writable_callback: Callable[[], None] | None = None
        """Called when the transport asks for writes again after a pause."""
        # Inside parser.feed_data: requests wait for the read to be parsed. A _Walk instead of
        # True while a read is followed by position (_walk_for): no attribute of its own (below).
        self._feeding: bool | _Walk = False
        self._deferred: tuple[DirectCycle, Any] | None = None
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._in_head = _BETWEEN  # where the parser stands: _BODY ... _ENDED
        self._head_size = 0  # bytes of url and header lines parsed in this head
        # When a read last left the head incomplete: the bytes received for it that the parser
        # has not reported, and _head_size then (_bound_head); between requests, the blank lines
        # received and 0 (_bound_blank). One attribute: with uvicorn's, an instance holds 42, the
        # most a dict of 64 slots takes; a 43rd made every request cost more.
        self._head_open = _NOTHING_OPEN
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._chunks = _NO_CHUNK_HEADER  # where a chunked body stands (_NO_CHUNK_HEADER ... _CARRIED)
        self._trailer_size = 0  # trailer fields parsed: name, value and 4 bytes each, as a head's
        self._trailer_open = 0  # bytes received of the trailer field the parser holds (CR and LF left out)
        self._idle_since: float | None = None  # loop time the last response completed, while no request began since

    @classmethod
    def configured(
        cls,
        max_head: int,
        head_timeout: float,
        direct: Callable[[HeadLimitedHttpProtocol, DirectCycle], bool] | None = None,
        peer_errors: PeerErrorLog | None = None,
        pending: PendingConnections | None = None,
        connections: OpenConnections | None = None,
    ) -> type[HeadLimitedHttpProtocol]:
        """A subclass with these limits (and ``direct``, ``pending`` and ``connections``), to pass
        as ``http=`` to ``uvicorn.Config``."""
        # staticmethod: a plain function stored on the class would be bound to each instance.
        global _small_read
        _small_read = min(_small_read, max_head)
        attrs = {"max_head": max_head, "head_timeout": head_timeout, "direct": staticmethod(direct) if direct else None}
        if peer_errors is not None:
            attrs["peer_errors"] = peer_errors  # type: ignore[assignment]
        if pending is not None:
            attrs["pending"] = pending  # type: ignore[assignment]
        if connections is not None:
            attrs["open_connections"] = connections  # type: ignore[assignment]
        return type(cls.__name__, (cls,), attrs)

    # -- connection ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        connections = self.open_connections
        if connections is not None and self._open_key is None:  # (set: a TLS door counted it)
            self._open_key = connections.opened(self.client, transport)
            if self._open_key is None:
                self._turn_away(_TOO_MANY_OPEN)
                return
        pending = self.pending
        if pending is not None and not pending.admit(self, self.client):
            self._turn_away(_TURNED_AWAY)
            return
        self._arm_head_timer()

    def adopt_open(self, key: str) -> None:
        """Count in ``open_connections`` as ``key``, counted already (by a TLS door), before ``connection_made``."""
        self._open_key = key

    def _turn_away(self, why: int) -> None:
        """Refused at its accept (``why``: ``_TURNED_AWAY`` or ``_TOO_MANY_OPEN``): answered once
        it speaks (``data_received``), not before, as the answer would cross its request; cut
        when it says nothing within ``REFUSAL_GRACE`` seconds, or at once when enough refused
        connections are kept already (``PendingConnections.begin_refusal``)."""
        self._refused = True
        self._in_head = why  # (connection_lost gives the refusal back: end_refusal)
        pending = self.pending
        if pending is not None and pending.begin_refusal():
            self._head_timer = self.loop.call_later(REFUSAL_GRACE, self.transport.abort)
        else:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._drain is not None:
            self._end_drain()
        pending = self.pending
        if pending is not None:
            pending.release(self)
            if self._in_head >= _TURNED_AWAY:
                pending.end_refusal()
        key = self._open_key
        if key is not None and self.open_connections is not None:
            self._open_key = None
            self.open_connections.closed(key)
        callback, self.lost_callback = self.lost_callback, None
        super().connection_lost(exc)
        if callback is not None:
            callback()

    def abort(self) -> None:
        """Drop the client connection at once, e.g. when a response can no longer complete."""
        for cycle in [self.cycle, *(c for c, _ in self.pipeline)]:
            if cycle is not None:
                cycle.disconnected = True
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            if self._drain is not None:
                if self._tap is not None:
                    self._tap_unparsed(data)
                self._dropped(len(data))
            elif self._in_head == _TURNED_AWAY and self.pending is not None and not self.transport.is_closing():
                self._refuse_pending(self.pending)
            elif self._in_head == _TOO_MANY_OPEN and self.open_connections is not None and not self.transport.is_closing():
                self._refuse_crowded(self.open_connections.refusal(self.client))
            return
        if self._chunks:
            self._chunks = _CARRIED
        # A read that could hold more of a head than the bound, counted with what was counted
        # before it, or that ends with more CR and LF than a head's end (blank lines after a
        # request): followed by position (_Walk). Any other read is too short for a head in it
        # to pass the bound, and ends with no blank lines (but up to 4 bytes of them behind a
        # body of known length, which are let go: one request's worth, a few bytes).
        # Each operation here is paid by every request, so the usual read is let through on
        # cheap tests first: no longer than the smallest bound in this process, nothing counted
        # before it (_NOTHING_OPEN itself), its 5th byte from the end not CR, LF or another
        # control byte (no slice, no "in" over bytes); _walk_for checks the rest.
        size = len(data)
        if size > _small_read or self._head_open is not _NOTHING_OPEN or size < 5 or data[-5] < 14:
            walk = self._walk_for(data)
            if walk is not None:
                self._read_walked(data, walk)
                return
        if not self._feed(data, True):
            return
        at = self._in_head
        if at == _ENDED:  # (every read that holds whole requests, and nothing after them)
            self._in_head = _BETWEEN
            self._head_open = _NOTHING_OPEN
        elif at == _HEAD:
            self._bound_head(data, True)
        elif at == _BEHIND:
            self._in_head = _HEAD
            self._bound_head(data, False)
        elif at == _BETWEEN:
            self._bound_blank(size)
        elif self._chunks:
            self._bound_trailer(data)

    def _feed(self, data: bytes, feeding: bool | _Walk) -> bool:
        """Feed ``data`` to the parser with ``_feeding`` set (True, or the read's ``_Walk``), then
        launch the request its callbacks deferred; False when the parser stopped (handled by
        ``_parse_failed``)."""
        self._feeding = feeding
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            self._parse_failed(exc, data)
            return False
        finally:
            self._feeding = False
            deferred = self._deferred
            if deferred is not None:
                self._deferred = None
                self._launch(*deferred)
        return True

    def _read_walked(self, data: bytes, walk: _Walk) -> None:
        """``data_received`` for a read followed by position (``_Walk``): the blank lines after
        the last request's end count, and a head begun behind it counts from there."""
        if not self._feed(data, walk):
            return
        at = self._in_head
        if at == _ENDED:
            self._in_head = _BETWEEN
            self._head_open = _NOTHING_OPEN
            end = walk.message_end()
            if end is not None and end < len(data):
                self._bound_blank(len(data) - end)
        elif at == _HEAD:
            self._bound_head(data, True)
        elif at == _BEHIND:
            self._in_head = _HEAD
            self._bound_head(data, False, walk.message_end())
        elif at == _BETWEEN:
            self._bound_blank(len(data))
        elif self._chunks:
            self._bound_trailer(data)

    def handle_websocket_upgrade(self) -> None:
        """uvicorn's hand-over to the WebSocket protocol, which also gets the headers as received:
        uvicorn feeds it the lowercased names of ``scope["headers"]`` (``raw_request_headers``),
        and the target as sent, which its scope's path and query cannot tell (``request_target``).
        The protocol uvicorn builds is given them before it reads the handshake; this protocol
        is done once it hands over."""
        pending = self.pending
        if pending is not None and self not in pending and not pending.admit(self, self.client):
            # A kept-alive connection's later upgrade: pending again until its agent's HELLO.
            self._refuse_pending(pending)
            return
        build, raw = self.ws_protocol_class, list(self._raw_headers)
        found = self.scope["extensions"].get(TARGET_EXTENSION)
        target = found if isinstance(found, bytes) else None

        def with_raw_headers(**kwargs: Any) -> Any:
            protocol = build(**kwargs)  # type: ignore[misc]
            if isinstance(protocol, DeadPeerWebSocketProtocol):
                protocol.raw_request_headers = raw
                protocol.request_target = target
            if pending is not None:
                if isinstance(protocol, Droppable):
                    pending.hand_over(self, protocol)
                else:
                    pending.release(self)  # a protocol that cannot be dropped holds no place
            key = self._open_key
            if key is not None and self.open_connections is not None:  # the WebSocket holds its place
                self._open_key = None
                if isinstance(protocol, Counted):
                    protocol.adopt_open(key)
                else:
                    self.open_connections.closed(key)
            return protocol

        self.ws_protocol_class = with_raw_headers  # type: ignore[assignment]
        super().handle_websocket_upgrade()

    def _parse_failed(self, exc: Exception, data: bytes) -> None:
        """The parser stopped in ``data``, a read: an upgrade, a refused head or trailer, a method
        it has no name for, or invalid HTTP."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._close_after_response()
        elif isinstance(exc.__context__, _HeadTooLarge):
            self._refuse_head(self._request_line_over())
        elif isinstance(exc.__context__, _TrailerTooLarge):
            self._drop_trailer()
        elif isinstance(exc.__context__, _DrainOver):
            pass  # (closed by _dropped)
        elif isinstance(exc.__context__, _BadHead):
            self._refuse_bad_head(str(exc.__context__))
        elif isinstance(exc.__context__, _BadVersion):
            self.logger.debug("Request refused: HTTP/%s", exc.__context__)
            self._refuse(b"HTTP/1.1 505 HTTP Version Not Supported\r\n",
                         f"HTTP/{exc.__context__} is not supported: send HTTP/1.1 (or 1.0)\n")
        elif isinstance(exc, httptools.HttpParserInvalidMethodError) and is_token(
            data.lstrip(b"\r\n").partition(b" ")[0][:_METHOD_SHOWN]
        ):
            # A method token llhttp has no name for (it parses methods from a fixed list, with
            # no setting for others): not a malformed request but one the relay cannot carry,
            # RFC 9110 15.6.2's 501. (Bytes that are no token, a TLS hello say, are invalid HTTP.)
            self.peer_errors.log(
                "invalid-method", logging.INFO, "request from %s with a method the relay cannot parse", _address(self.client)
            )
            self._refuse(b"HTTP/1.1 501 Not Implemented\r\n", _UNKNOWN_METHOD)
        else:
            self.peer_errors.log(
                "invalid-http", logging.WARNING, "invalid HTTP request from %s: %s", _address(self.client), exc
            )
            self.send_400_response("Invalid HTTP request received.")

    # -- parser callbacks --------------------------------------------------------------
    # uvicorn's callbacks copied, not called through super() (one Python call fewer each, per
    # request and per header), with the relay's limits and checks in them; the differences:
    # the cycle's message_event (``_Unwaited``), and the keep-alive timer (``on_response_complete``).
    # tests/net/test_uvicorn_contract.py compares the scope and cycle they make with uvicorn's.
    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._raw_headers = []
        # A head that begins behind another message's end in the same read: where it begins
        # in the read is not known (_bound_head).
        self._in_head = _HEAD if self._in_head == _BETWEEN else _BEHIND
        self._head_size = 0
        self._idle_since = None  # a request began (the keep-alive timer, when due, sees it: on_response_complete)
        # The head timer is armed once this read is parsed (data_received) if the head is
        # still incomplete then: a head that came whole in one read never needs it.
        # The scope uvicorn makes here is made when asked for (DirectCycle.scope, request_scope).

    def request_scope(
        self, method: str, http_version: str, headers: list[tuple[bytes, bytes]], raw_headers: list[tuple[bytes, bytes]],
        target: bytes,
    ) -> Any:
        """The ASGI scope uvicorn's callbacks make for a request, up to its method (the path,
        raw path and query string follow: ``DirectCycle.scope``), with the relay's extensions."""
        return {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "headers": headers,
            "state": self.app_state.copy(),
            "extensions": {CONNECTION_EXTENSION: self, RAW_HEADERS_EXTENSION: raw_headers, TARGET_EXTENSION: target},
            "method": method,
        }

    def on_url(self, url: bytes) -> None:
        size = self._head_size + len(url)
        self._head_size = size
        self.url += url  # (before the bound: the refusal tells a target too long by it, _refuse_head)
        if size > self.max_head:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            # A trailer field: never a header of the request (RFC 9110 6.5.1), but bounded like
            # one. httptools reports a field once the next one begins (or the trailer ends): the
            # field it holds now began in this read (_bound_trailer).
            size = self._trailer_size + len(name) + len(value) + 4
            if size > self.max_head:
                raise _TrailerTooLarge
            self._trailer_size = size
            self._trailer_open = 0
            self._chunks = _FIELD_HERE
            return
        size = self._head_size + len(name) + len(value) + 4
        self._head_size = size
        if size > self.max_head:
            raise _HeadTooLarge
        value = field_value(value)  # llhttp keeps the spaces after a value, no part of it
        self._raw_headers.append((name, value))
        lower = name.lower()
        if lower == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((lower, value))

    def on_headers_complete(self) -> None:
        self._in_head = _BODY
        if self._feeding is not True:  # (checked first: it is True for every read but a walked one)
            # Every byte of the head counts, the ones the parser skips too, also when the
            # whole head came in this read (one of more than the bound: _Walk).
            walk: Any = self._feeding
            counted = walk.head_ends() if walk else None
            if counted is not None and counted > self.max_head:
                raise _HeadTooLarge
        if self._head_timer is not None:
            self._cancel_head_timer()
            self._head_open = _NOTHING_OPEN  # (a read of its body must not look like one of a head)
        parser = self.parser
        method = parser.get_method()
        upgrade = parser.should_upgrade()
        problem = head_problem(method, self.url, self._raw_headers, upgrade=upgrade)
        if problem is not None:
            self._absolute_form(method, problem)  # (only a refused target is looked at again: an ordinary one pays nothing)
            problem = head_problem(method, self.url, self._raw_headers, upgrade=upgrade)
            if problem is not None:
                raise _BadHead(problem)
        http_version = parser.get_http_version()
        if http_version != "1.1" and http_version != "1.0":
            # llhttp reads any digit.digit, and 0.9's bare "GET /": forwarded, the service would see
            # HTTP/1.1 and the record HTTP/2 for a request line no client of this relay can mean.
            raise _BadVersion(http_version)
        method_name = method.decode("ascii")
        root_path = self.root_path
        # The target as sent, up to a fragment (llhttp takes one; no client sends it, and a
        # service could read its ../ as part of the path the rules saw without them).
        target = self.url.partition(b"#")[0]
        if root_path:
            target = root_path.encode("ascii") + target
        if upgrade and self._should_upgrade():
            # handle_websocket_upgrade reads the method and headers from self.scope.
            self.scope = self.request_scope(method_name, http_version, self.headers, self._raw_headers, target)
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        else:
            app = self.app
        keep_alive = parser.should_keep_alive()
        if keep_alive and http_version == "1.0":
            # Kept alive when asked (Connection: keep-alive: frame_http10), but not after an HTTP/1.0
            # message with Transfer-Encoding, whose framing is faulty (RFC 9112 6.1): llhttp keeps it.
            keep_alive = not any(name == b"transfer-encoding" for name, _ in self.headers)
        existing_cycle = self.cycle
        pending = self.pending
        if pending is not None and self in pending.held:  # a request: pending no more (until idle again)
            pending.release(self)
        cycle = DirectCycle(  # uvicorn's own cycle, and the scope, are made only when asked for (_launch)
            self,
            method_name,
            http_version,
            root_path + path,
            root_path.encode("ascii") + raw_path if root_path else raw_path,
            parsed_url.query or b"",
            target,
            self.headers,
            self._raw_headers,
            # HTTP/1.0 has no 1xx: its 100-continue is ignored (RFC 9110 10.1.1), as nginx does.
            self.expect_100_continue and http_version != "1.0",
            keep_alive,
        )
        # self.cycle is a DirectCycle until a task starts for it (_launch puts uvicorn's in its place).
        self.cycle = cycle  # type: ignore[assignment]
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(cycle, app)
        else:
            # Pipelined HTTP requests need to be queued up.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))  # type: ignore[arg-type]

    def _absolute_form(self, method: bytes, problem: str) -> None:
        """Read a target in absolute-form (``GET http://host/path HTTP/1.1``) as a server must
        (RFC 9112 3.2.2): its path and query become the target, its authority the Host (every
        Host field's value, or one added), which then routes the request as a Host does. The
        request still goes only to the tunnel's own local service: the agent connects to its
        target alone, whatever the Host says. Raises ``_BadHead`` with ``problem`` for a target
        that is not in absolute-form, and with what is wrong with one that is malformed."""
        read = authority_as_host(self.url, method, lowered=self.headers, raw=self._raw_headers)
        if read is None:
            raise _BadHead(problem)
        if isinstance(read, str):
            raise _BadHead(read)
        self.url = read

    def on_chunk_header(self) -> None:
        # The trailer section follows the last chunk header: each one starts its count afresh.
        self._chunks = _CHUNK_HEADER_HERE
        self._trailer_size = self._trailer_open = 0
        walk: Any = self._feeding
        if walk is not True and walk:
            walk.chunked = True
            if walk.pos is not None:  # past the chunk's size line (and the CRLF before)
                found = walk.data.find(b"\n", walk.pos + 2 if walk.after_data else walk.pos)
                walk.pos = found + 1 if found >= 0 else None
                walk.after_data = False

    def on_body(self, body: bytes) -> None:
        self._chunks = _NO_CHUNK_HEADER
        if self._feeding is not True:
            walk: Any = self._feeding
            if walk and walk.pos is not None:
                walk.pos += len(body)
                walk.after_data = True
        if self._drain is not None:  # the body of a request answered already: dropped, and counted
            tap = self._tap
            if tap is not None:
                tap.add(body)
            self._dropped(len(body))
            if self._drain is None:
                raise _DrainOver
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._chunks = _NO_CHUNK_HEADER
        self._in_head = _ENDED
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            if self._drain is not None:  # the answered request's body ended within the bounds
                self._end_drain(ended=True)
                self._idle()
            return
        cycle.more_body = False
        event = cycle.message_event
        if event is not _UNWAITED:
            event.set()

    def on_response_complete(self) -> None:
        """uvicorn's, with one keep-alive timer for the connection's successive requests
        instead of a ``call_later`` per response cancelled by the next read: the timer, when
        due, closes the connection if it has been idle ``timeout_keep_alive`` seconds, and is
        armed again for the rest of that time if it has not."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        flow = self.flow
        if flow.read_paused:
            flow.resume_reading()
        if self.pipeline:
            self._idle_since = None
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)  # type: ignore[arg-type]  # a DirectCycle (on_headers_complete)
        elif self._in_head == _BODY and self.cycle.response_complete:
            # Answered before its body came whole: not idle until the rest is read (or lingered over).
            if self._drain is None:
                self._drain_body()
        else:
            self._idle()

    def _idle(self) -> None:
        """The connection waits for its next request: the keep-alive timer runs (and ``pending``
        may count it)."""
        pending = self.pending
        if pending is not None:
            key = self._open_key
            connections = self.open_connections
            # Counted only while the relay is crowded (PendingConnections.quiet_total), tested
            # here: this is the path of every kept-alive request.
            if key is not None and connections is not None and (
                connections.total > pending.quiet_total or connections.by_address.get(key, 0) > pending.quiet_per_address
            ):
                pending.idle(self, key)
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        since = self._idle_since
        if since is None:
            return  # a request came: the response that ends it arms the timer again
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    # -- after an answer that came before the body (nginx's lingering close) ----------------
    def close_answered(self) -> None:
        """Close the connection after a response, as its cycle asks (uvicorn's, through
        ``_HeadWithBody``, or ``http_direct.complete``): at once, unless the response answered
        the request being read while its body is still arriving (a 401 or 413 sent having read
        only the head of an upload); then ``_linger``."""
        cycle = self.cycle
        if self._in_head == _BODY and cycle is not None and cycle.response_complete and not self.transport.is_closing():
            self._linger()
        else:
            self.transport.close()

    def _linger(self) -> None:
        """Close after an answer the client may still be sending a body to, as nginx does
        (lingering close): closed at once, the connection would be reset by the client's next
        bytes, and a reset can make the client's system drop the answer before the client read
        it. Our side is shut once the answer is written (the client reads it, then the end),
        and what the client still sends is read and dropped, unparsed, until it closes or a
        bound passes (``linger_bytes`` read, ``linger_time`` in all, ``linger_quiet`` without a
        byte); then the connection closes."""
        self._refused = True  # reads are dropped from here on (data_received)
        if self._drain is None:
            self._drain_body()
        transport = self.transport
        if transport.can_write_eof():  # (a TLS transport cannot: the answer's length ends it)
            transport.write_eof()

    def _drain_body(self) -> None:
        """Read and drop what comes after an answer, within the bounds (``_linger``). On a
        kept-alive connection (``on_response_complete``) that is the rest of the answered
        request's body, parsed (uvicorn's cycle drops it): once it ends, the connection waits
        for its next request (``_idle``); if a bound passes first, it closes."""
        self._start_drain(self.linger_bytes, self.linger_time)

    def _start_drain(self, most: int, seconds: float) -> None:
        """Read and drop up to ``most`` bytes for ``seconds`` at most (and ``linger_quiet`` without
        a byte): ``_dropped`` counts them, ``_drain_due`` ends it."""
        now = self.loop.time()
        drain = self._drain = _Drain(now, most, now + seconds)
        drain.timer = self.loop.call_later(min(self.linger_quiet, seconds), self._drain_due)

    def _dropped(self, size: int) -> None:
        """Count ``size`` bytes read and dropped after the answer; close past ``linger_bytes``."""
        drain = self._drain
        assert drain is not None
        drain.left -= size
        drain.last = self.loop.time()
        if drain.left < 0:
            self._drain_over("bytes")

    def _drain_due(self) -> None:
        drain = self._drain
        if drain is None:
            return
        drain.timer = None
        now = self.loop.time()
        due = min(drain.until, drain.last + self.linger_quiet)
        if now >= due:
            self._drain_over("time" if now >= drain.until else "quiet")
        else:
            drain.timer = self.loop.call_later(due - now, self._drain_due)

    def _drain_over(self, bound: str) -> None:
        self.logger.debug("Reading after an answer ended (%s bound): connection closed.", bound)
        self._end_drain()
        self._refused = True
        self.transport.close()

    def _end_drain(self, *, ended: bool = False) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and drain.timer is not None:
            drain.timer.cancel()
        tap, self._tap = self._tap, None
        if tap is not None:
            tap.finish(ended)

    def tap_body(self, tap: BodyTap) -> bool:
        """Hand ``tap`` what the connection reads from now on of the body of the request it
        answered before that body came whole (``_drain_body``, ``_linger``), within the bounds of
        that reading; its ``finish`` is called when the reading stops. False, with nothing
        done, when no such reading is under way (the connection is closing, or the body ended)."""
        if self._drain is None or self._tap is not None or self.transport.is_closing():
            return False
        self._tap = tap
        return True

    def _tap_unparsed(self, data: bytes) -> None:
        """``data_received`` while lingering: the next ``left`` bytes are the body of known length."""
        tap = self._tap
        assert tap is not None
        left = tap.left
        if left > 0:
            piece = data[:left]
            tap.add(piece)
            tap.left = left - len(piece)
            if tap.left == 0:
                self._tap = None
                tap.finish(True)

    def _start_asgi_task(self, cycle: DirectCycle, app: Any) -> None:  # type: ignore[override]
        if self._feeding:
            self._deferred = (cycle, app)  # launched once this read is parsed (data_received)
        else:
            self._launch(cycle, app)

    def _launch(self, cycle: DirectCycle, app: Any) -> None:
        direct = self.direct
        if direct is not None and app is self.app and not self.transport.is_closing() and direct(self, cycle):
            return  # the direct path writes its response to the transport itself (http_direct)
        task_cycle = cycle.task_cycle()
        current: Any = self.cycle
        if current is cycle:  # (else a request parsed after it is the current one: pipelining)
            self.cycle = task_cycle
        task_cycle.transport = _HeadWithBody(self)  # type: ignore[assignment]
        super()._start_asgi_task(task_cycle, app)

    def resume_writing(self) -> None:
        super().resume_writing()
        callback = self.writable_callback
        if callback is not None:
            callback()

    # -- limits ------------------------------------------------------------------------
    def _walk_for(self, data: bytes) -> _Walk | None:
        """A ``_Walk`` of ``data`` from where the parser stands before it: between requests
        (the blank lines counted so far carried), in a head (all of it counted so far carried),
        or in a body (where in a chunked body's framing is not known: ``_Walk``); None if
        the read cannot hold more of a head than the bound and ends with no blank lines."""
        held, seen, tail = self._head_open
        size = len(data)
        if size + held + self._head_size <= self.max_head and size >= 5 and data[-5] >= 14:
            return None
        at = self._in_head
        if at == _BETWEEN:
            return _Walk(data, 0, 0, held)
        if at == _HEAD:
            return _Walk(data, 0, -tail - 1, held + seen)
        if self._chunks or any(name == b"transfer-encoding" for name, _ in self.headers):
            return _Walk(data, None, None, 0, chunked=True)
        return _Walk(data, 0, None, 0)

    def _bound_head(self, data: bytes, whole: bool, begun: int | None = None) -> None:
        """Count the bytes of a read that left a head incomplete, and answer 431 once the head
        is over ``max_head``; arm the head timer if the head began after a response.

        Every byte received for an incomplete head counts: the blank lines before it, and the
        spaces llhttp lets repeat between the request line's parts and before a field's value,
        though the parser keeps none of them; so a client cannot hold a head open with bytes that
        are never reported, only the head timeout stopping it.

        The parser reported the head's target (``on_url``) and its complete header lines
        (``on_header``), counted in ``_head_size``; ``_head_open`` keeps the bytes received that
        it has not reported (a line it holds, spaces it skipped). ``whole``: every byte of the
        read was the head's, or blank lines before it (it began between requests, or inside the
        head), and they all count. Otherwise the head began in the read behind the end of the
        request before (its body, in a pipelining client's read), whose last bytes cannot be told
        from blank lines: then what counts is the line the parser holds, the read's last (with
        the CR and LF after it), or the request line so far (``_request_line_held``), and
        whatever the client sends next. (``begun``: where the head's bytes began in the read, the
        end of the request before it, when a ``_Walk`` of the read knows it: they all count,
        the blank lines before the request line too.) So the count never takes in the bytes of
        the request before, however the client's bytes were cut into reads, and a client that
        sends a head over the bound, in one read or many, whether it ends the head or waits,
        gets 431.

        ``_head_open`` also keeps how many bytes of CR and LF (3 at most) the head so far ends
        with, for a ``_Walk`` of the next read to find the head's end across the two.
        """
        held, seen, tail = self._head_open
        size = self._head_size
        end = len(data)
        while end and data[end - 1] in b"\r\n":
            end -= 1
        tail = min(3, len(data) - end + (tail if whole and not end else 0))
        if whole:
            held += seen + len(data) - size  # (below 0 when fields with no space after the colon came)
        elif begun is not None:
            held = len(data) - begun - size
        else:
            start = data.rfind(b"\n", 0, end) + 1  # of the read's last line with bytes in it
            if self._raw_headers or self._request_line_ends_at(data, start):
                held = len(data) - start
            else:
                held = self._request_line_held(data, start, end) + len(data) - end
        self._head_open = (held, size, tail)
        if self._head_timer is None:  # (cancelled when the head before ended: on_headers_complete)
            self._arm_head_timer()
        if size + held > self.max_head:
            self._refuse_head(self._request_line_over())

    def _bound_blank(self, count: int) -> None:
        """Count blank lines (CR and LF) between requests, or before the first: llhttp
        skips them, as nginx does, but they count toward the head that would follow them, so a
        client sending nothing else is answered 431 past ``max_head``. (One that stops sending
        is an idle connection: closed silently at the head timeout, before a first request,
        or the keep-alive timeout after a response.) ``count``: the read's blank lines, all of
        it but after the end of a request in the same read."""
        held = self._head_open[0] + count
        self._head_open = (held, 0, 0)
        if held > self.max_head:
            self._refuse_head()

    def _request_line_held(self, data: bytes, start: int, end: int) -> int:
        """The bytes of the request line that ends ``data[start:end]``, but for its target
        (``on_url`` counted it): the method, the spaces and the version so far.

        The line began in this read, behind bytes of the request before: it is found from its
        end, as the target so far (``self.url``, all in this read) with spaces and the method
        before it, and spaces and the version so far after it. 0 while the read ends in the
        method (a few bytes: llhttp refuses a longer one), or if the line is not found so.
        """
        url = self.url
        if not url:
            return self._method_held(data, start, end, end)
        # The target ends the read, or spaces and the version so far follow it.
        ends = []
        if data.endswith(url, start, end) and end - len(url) > start and data[end - len(url) - 1] == 0x20:
            ends.append(end)
        space = data.rfind(b" ", start, end)  # the last before the version so far
        after = start + len(data[start:space].rstrip(b" ")) if space >= 0 else end
        if after < end and data.endswith(url, start, after):
            ends.append(after)
        for after in ends:
            held = self._method_held(data, start, after - len(url), end)
            if held:
                return held - len(url)
        return 0

    def _method_held(self, data: bytes, start: int, target: int, end: int) -> int:
        """``end`` less where the request line begins, if it has its method and spaces just before
        ``target`` (the start of its target) in ``data[start:]``, else 0."""
        method_end = start + len(data[start:target].rstrip(b" "))
        if method_end == target:
            return 0  # no space after the method yet: the read ends in it
        method = self.parser.get_method()
        if not data.endswith(method, start, method_end):
            return 0
        return end - (method_end - len(method))

    def _request_line_ends_at(self, data: bytes, start: int) -> bool:
        """Whether the request line of this head ends in ``data`` just before ``start``: with
        the version, and the end of the target (``on_url``) before it."""
        version = start - len(b" HTTP/1.1\r\n")
        if version < 0 or not _VERSION_LINE_END.match(data, version, start):
            return False
        end = version
        while end and data[end - 1] == 0x20:  # llhttp lets spaces repeat between the parts
            end -= 1
        tail = self.url[-min(16, end):] if end else b""
        return data.endswith(tail, 0, end)

    def _bound_trailer(self, data: bytes) -> None:
        """Count the trailer bytes of a read that left a chunked body after a chunk header with
        no body bytes since (``_chunks``), and drop the connection past ``max_head``.

        Such a chunk header is the last chunk's, followed by the trailer section, or one whose
        data has not come yet, the read ending with its size line. httptools holds the trailer
        field by field across reads: the fields it reported were counted by ``on_header``
        (name, value and 4); this counts the one it holds as the bytes of its line received so
        far, CR and LF left out, and 2. That line is the read's last (no field spans two lines:
        llhttp refuses obsolete line folding), or the whole read continues it (``_CARRIED``). A
        read that parsed a chunk header and ends with a whole line that is not a field's ends
        with a size line: no trailer bytes. So the count never takes in the head, body bytes or
        size lines (with extensions or not), however the client's bytes were cut into reads,
        and a client that sends a long trailer and waits for an answer is dropped whether it
        came in one read or many.
        """
        end = len(data)
        while end and data[end - 1] in b"\r\n":  # a line's end, and the CR of the empty line that ends the trailer
            end -= 1
        chunks = self._chunks
        if chunks == _CARRIED:
            held = self._trailer_open + end
        else:
            start = data.rfind(b"\n", 0, end) + 1  # of the read's last line with bytes in it
            if (
                chunks == _CHUNK_HEADER_HERE
                and b"\n" in data[end:]
                and (start == 0 or not _FIELD_LINE.match(data, start))
            ):
                held = 0  # a size line (a field line after it would start past its LF, so past 0)
            else:
                held = end - start
        self._trailer_open = held
        if held and self._trailer_size + held + 2 > self.max_head:
            self._drop_trailer()

    def _drop_trailer(self) -> None:
        self.logger.debug("Trailer section larger than %d bytes: connection dropped.", self.max_head)
        self.abort()

    def _refuse_pending(self, pending: PendingConnections) -> None:
        """Answer 429 and close: the client's address holds its most pending connections. Its
        request is not read (a WebSocket upgrade: not upgraded)."""
        self._refuse_crowded(pending.refusal(self.client))

    def _refuse_crowded(self, text: str) -> None:
        """Answer 429 (``text``) and close, the request unread: the client's address holds its
        most connections of a kind (pending, or open)."""
        self._cancel_head_timer()
        self._refuse(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: %d\r\n" % RETRY_AFTER, text, linger=False)

    def drop_pending(self) -> None:
        """Dropped to make room for newer connections (``PendingConnections``): 503 and close
        when it began a head; closed without a word when it sent nothing, or is idle between
        requests (as at the head or keep-alive timeout: an answer would cross its request)."""
        if self.transport.is_closing():
            return
        if self._in_head not in (_HEAD, _BEHIND):
            self.transport.close()
            return
        self._cancel_head_timer()
        self._refuse(b"HTTP/1.1 503 Service Unavailable\r\nretry-after: %d\r\n" % RETRY_AFTER, DROPPED_PENDING, linger=False)

    def _request_line_over(self) -> bool:
        """Whether the request line of the head in progress passes ``max_head`` by itself: its
        method, a space, its target as received so far (``on_url``) and the least that can follow
        it (`` HTTP/1.1`` and CRLF); the spaces llhttp skips and blank lines before it left out."""
        return len(self.parser.get_method()) + 1 + len(self.url) + _VERSION_AND_CRLF > self.max_head

    def _refuse_head(self, target: bool = False) -> None:
        """Answer a head over ``max_head`` and close: 414 when its request line alone is over
        (``target``: the request-target is longer than the relay parses, RFC 9112 3, as nginx
        answers), else 431 (its header fields, or bytes the parser skips, made it so)."""
        self._cancel_head_timer()
        if target:
            self._refuse(b"HTTP/1.1 414 URI Too Long\r\n",
                         f"request target too long: the request line must fit in {format_size(self.max_head)}\n")
            return
        self._refuse(b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
                     f"request head larger than {format_size(self.max_head)}\n")

    def _refuse_bad_head(self, problem: str) -> None:
        """Answer a head that must not be forwarded with 400, and close the connection."""
        self.logger.debug("Request refused: %s", problem)
        self._refuse(b"HTTP/1.1 400 Bad Request\r\n", answer_text(f"{problem}\n"))

    def _refuse(self, status_line: bytes, text: str, *, linger: bool = True) -> None:
        """Answer a head with ``status_line`` and close the connection; parse nothing more
        (``_answer_and_close``; without ``linger``, at once: a refusal for crowding).

        Behind responses still to be sent (pipelining), the connection closes once the last
        of them is sent instead: an answer written now would land inside one of them.
        """
        self._refused = True
        last = self.pipeline[0][0] if self.pipeline else self.cycle  # the newest waits at the left
        if last is not None and not last.response_complete:
            last.keep_alive = False
            return
        if linger:
            self._answer_and_close(_plain_response(status_line, text))
        else:
            self.transport.write(_plain_response(status_line, text))
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser refused, closed as the relay's other answers to
        a head are (``_answer_and_close``), where uvicorn closes at once."""
        self._answer_and_close(_plain_response(b"HTTP/1.1 400 Bad Request\r\n", msg))

    def _answer_and_close(self, answer: bytes) -> None:
        """Write the relay's own answer to a head and close. The client may still be sending
        (the rest of a head too large, or slow): closed at once, its next bytes would reset the
        connection, and a reset can drop the answer unread. So our side ends after the answer,
        and what still comes is read and dropped, briefly (``head_linger_*``; ``_drain_due``
        closes). A TLS connection cannot end one side: it closes at once."""
        self._refused = True
        transport = self.transport
        transport.write(answer)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._start_drain(self.head_linger_bytes, self.head_linger_time)

    def _close_after_response(self) -> None:
        """The request asked to switch to a protocol the relay does not speak (``h2c`` ...).

        It is answered as plain HTTP; then the connection closes, since what follows on it
        is not HTTP. Until then anything the client sends is ignored.
        """
        self._refused = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
        else:
            self.transport.close()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        at = self._in_head
        if not at or self.transport.is_closing():
            return
        self._refused = True
        # A head begun gets 408; a connection that never began a request (nothing, or blank
        # lines only) is an idle one, closed silently as nginx does.
        if at != _BETWEEN:
            text = f"request head not received within {self.head_timeout:g} s\n"
            self._answer_and_close(_plain_response(b"HTTP/1.1 408 Request Timeout\r\n", text))
        else:
            self.transport.close()


class DeadPeerWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets protocol that aborts a peer which stopped answering pings.

    uvicorn closes such a connection politely, and a close waits for the write buffer to
    drain, which never happens when the peer is gone: the tunnel name would stay taken.
    It also counts a denial (an HTTP response instead of the upgrade) as a finished
    handshake, which uvicorn would otherwise log as an error on every refused WebSocket.

    A binary message can also go straight to ``on_bytes`` from the protocol callback: uvicorn
    would queue it, pause reading, and wake the task awaiting ``receive()``, which resumes
    reading: two system calls and a trip through the event loop per message from an agent.

    A text message that is not UTF-8 closes the connection with 1007 and one rate-limited log
    line (``peer_errors``), where uvicorn would log a traceback for each.

    A peer whose connection is lost without a close frame is reported with code 1006, where
    uvicorn reports 1005, the code of a close frame without one.
    """

    on_bytes: Callable[[bytes], None] | None = None
    """Called with each complete binary message instead of queueing it for ``receive()``."""
    raw_request_headers: list[tuple[bytes, bytes]] | None = None
    """The handshake's headers as received (``HeadLimitedHttpProtocol.handle_websocket_upgrade``),
    put in the scope under ``RAW_HEADERS_EXTENSION`` as for a request."""
    request_target: bytes | None = None
    """The handshake's target as sent, put in the scope under ``TARGET_EXTENSION`` as for a request."""
    peer_errors: PeerErrorLog = _PEER_ERRORS
    unanswered_ping = False
    """The peer was dropped because it did not answer a ping in time (it froze or vanished)."""

    @classmethod
    def logging_to(cls, peer_errors: PeerErrorLog) -> type[DeadPeerWebSocketProtocol]:
        """A subclass (of this class or a configured one) logging peers' mistakes to ``peer_errors``."""
        return type(cls.__name__, (cls,), {"peer_errors": peer_errors})

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        raw = self.raw_request_headers
        scope = getattr(self, "scope", None)
        if raw is not None and scope is not None and len(raw) == len(scope["headers"]):
            scope["extensions"][RAW_HEADERS_EXTENSION] = raw
        if self.request_target is not None and scope is not None:
            scope["extensions"][TARGET_EXTENSION] = self.request_target

    def connection_lost(self, exc: Exception | None) -> None:
        # uvicorn says 1005 (no status) for a peer gone without a close frame, as for a close
        # frame without a code: the application could not tell a client that left politely from
        # one that vanished. 1006 says the latter (queued first: the application reads no further).
        if self.handshake_complete and self.conn.close_rcvd is None and not self.close_sent:
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
        super().connection_lost(exc)

    def send_receive_event_to_app(self) -> None:
        on_bytes = self.on_bytes
        if on_bytes is None or self.curr_msg_data_type != "bytes" or self.close_sent:
            if self.curr_msg_data_type == "text" and not self.close_sent and not _is_utf8(self.frames):
                self._refuse_text()
                return
            super().send_receive_event_to_app()
            return
        frames, self.frames = self.frames, []
        on_bytes(frames[0] if len(frames) == 1 else b"".join(frames))

    def _refuse_text(self) -> None:
        """Close with 1007 (RFC 6455: data inconsistent with the message type); the application
        receives ``websocket.disconnect`` with that code."""
        self.frames = []
        self.peer_errors.log(
            "invalid-utf8",
            logging.WARNING,
            "WebSocket peer %s sent a text message that is not UTF-8; closed with 1007",
            _address(self.client),
        )
        self.conn.send_close(1007, "text message is not valid UTF-8")
        self.handle_parser_exception()

    def send_now(self, data: bytes) -> bool:
        """Send one binary message at once, as ``send()`` would, without a coroutine.

        Returns False and sends nothing while the transport asks us to pause: the caller then
        waits for ``writable``. A connection that is gone raises ``ClientDisconnected``, as
        ``send()`` does.
        """
        if self.disconnected or self.close_sent:
            raise ClientDisconnected()
        if not self.writable.is_set():
            return False
        self.conn.send_binary(data)
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True

    def keepalive_timeout(self) -> None:
        self.unanswered_ping = True
        super().keepalive_timeout()
        self.transport.abort()


# The smallest max_head of the protocol classes configured in this process: a read no longer
# than this, with nothing counted before it, holds no head over its bound (data_received).
_small_read = HeadLimitedHttpProtocol.max_head


def _is_utf8(frames: list[bytes]) -> bool:
    data = frames[0] if len(frames) == 1 else b"".join(frames)
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
