"""Forwarding one public request (HTTP or WebSocket) through a tunnel, streaming both ways.

Request bodies are sent within the stream's send window; response bodies are written to the
client with ASGI ``send`` (which waits for the socket to drain) and only then acknowledged to
the agent, so a slow client slows its own stream and never fills the relay's memory.

No client holds a tunnel's streams for free: a request body that stops arriving for
``body_timeout`` seconds is dropped (408), and one client address holds at most
``ClientSlots.limit`` of a tunnel's streams at once (429 beyond).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from devtunnel.errors import DevtunnelError, ProtocolError
from devtunnel.relay.headers import forward_request_headers, forward_response_headers, websocket_accept_headers
from devtunnel.relay.http import CONNECTION_EXTENSION, RAW_HEADERS_EXTENSION, HeadLimitedHttpProtocol
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.rules import RuleBook, answer_messages, edit_request, edit_response, strip_rule_header
from devtunnel.relay.tunnel import Stream, Tunnel
from devtunnel.values.sizes import format_size
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.relay_side import RelayConnection
from devtunnel.protocol.events import Fields, StreamReset, WebSocketClosed
from devtunnel.rules import Decision
from devtunnel.values.request_head import head_problem

log = logging.getLogger("devtunnel.relay")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_HTTP_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0", "2": b"2", "2.0": b"2"}
_NO_BODY_STATUS = (204, 304)
# Close codes that name a condition but may not be sent in a close frame (RFC 6455 7.4.1).
_UNSENDABLE_CLOSE = {1005: 1000, 1006: 1011, 1015: 1011}


async def send_plain(send: Send, status: int, text: str, *, close: bool = False) -> None:
    """Answer with a short text/plain response."""
    for message in _plain(status, text, close=close):
        await send(message)


#: Seconds a client over its share is asked to wait.
RETRY_AFTER = 1
_RETRY_AFTER = (b"retry-after", str(RETRY_AFTER).encode())


@dataclass(frozen=True, slots=True)
class BodyStalled(StreamReset):
    """The relay's own failure of a stream: the client's request body stopped arriving."""


class ClientSlots:
    """How many of each tunnel's streams each client address holds, within ``limit``.

    One address (a slowloris, a runaway script) must not take every stream of a tunnel and
    leave the others 503s: past its share it gets 429 while other addresses are still served.
    An IPv6 client counts by its /64, the block one host or site usually has to itself.
    With ``limit`` None nothing is counted (a tunnel's own limit still applies: 503).
    """

    __slots__ = ("_held", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._held: dict[tuple[Tunnel, str], int] = {}

    def take(self, tunnel: Tunnel, ip: str) -> bool:
        """Count one more stream of ``tunnel`` for ``ip``; False (nothing counted) past the limit."""
        if self.limit is None:
            return True
        key = (tunnel, client_key(ip))
        held = self._held.get(key, 0)
        if held >= self.limit:
            return False
        self._held[key] = held + 1
        return True

    def give_back(self, tunnel: Tunnel, ip: str) -> None:
        """The stream counted by ``take`` is over."""
        if self.limit is None:
            return
        key = (tunnel, client_key(ip))
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def held(self, tunnel: Tunnel, ip: str) -> int:
        """Streams of ``tunnel`` that ``ip`` holds now."""
        return self._held.get((tunnel, client_key(ip)), 0)


def client_key(ip: str) -> str:
    """What a client address counts as: itself for IPv4, its /64 for IPv6 (an IPv4 address
    mapped into IPv6, as a dual-stack listener sees IPv4 clients, counts as the IPv4 one)."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip.partition("%")[0])
    except ValueError:
        return ip
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def _over_share(tunnel: Tunnel, ip: str, slots: ClientSlots, peer_errors: PeerErrorLog) -> str:
    """Log, and say to the client, that it already holds its share of ``tunnel``'s streams (429)."""
    peer_errors.log(
        "client-share", logging.WARNING, "client %s holds its share of tunnel %s (%d streams): 429", ip, tunnel.name,
        slots.limit,
    )
    return f"too many requests from {ip} in flight on tunnel {tunnel.name} (at most {slots.limit}); try again\n"


def _client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _target(scope: Scope) -> bytes:
    query = scope.get("query_string")
    return scope["raw_path"] + b"?" + query if query else scope["raw_path"]


def _head_problem(scope: Scope) -> str | None:
    """Why this request must not be forwarded, or None (the HTTP protocol checked it already;
    this keeps the rule when the application is served some other way)."""
    method = scope.get("method", "GET").encode("latin-1")
    return head_problem(method, _target(scope), scope["headers"])


def _body_length(headers: Iterable[tuple[bytes, bytes]]) -> tuple[int, bool]:
    """The request's Content-Length (-1 without one) and whether it is chunked."""
    length = -1
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            length = int(value)  # the parser accepted only digits (and surrounding blanks)
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


class HttpForwarder:
    """Forwards public HTTP requests into tunnels (one instance per relay).

    A request arrives either as an ASGI call (``__call__``, run in a task by uvicorn) or, when
    its whole body came with its head, from the HTTP protocol's callback (``direct``): then a
    ``DirectExchange`` answers it from callbacks, without a task or a future.
    """

    def __init__(
        self,
        *,
        max_body: int,
        proto: str,
        body_timeout: float,
        slots: ClientSlots,
        peer_errors: PeerErrorLog,
        rules: RuleBook | None = None,
    ) -> None:
        self.rules = rules or RuleBook()
        self.max_body = max_body
        self.proto = proto
        self.body_timeout = body_timeout
        self.slots = slots
        self.peer_errors = peer_errors
        self._proto_bytes = proto.encode()

    def _fields(self, scope: Scope, host: bytes) -> Fields:
        """The request headers as they go to the agent (before the rules edit them)."""
        extensions = scope.get("extensions") or {}
        raw_headers = extensions.get(RAW_HEADERS_EXTENSION) or scope["headers"]
        return forward_request_headers(raw_headers, host, _client_ip(scope).encode(), self._proto_bytes)

    def _open(self, tunnel: Tunnel, scope: Scope, host: bytes, has_body: bool, decision: Decision | None) -> int:
        """Queue the request head on the tunnel; returns the stream id.

        Raises:
            ProtocolError, ValueError: the tunnel connection would not open the stream.
        """
        ip = _client_ip(scope)
        raw = self._fields(scope, host)
        fields = edit_request(raw, decision) if decision is not None else strip_rule_header(raw)
        return tunnel.conn.open_request(
            scope["method"].encode(),
            _target(scope),
            _HTTP_VERSIONS.get(scope["http_version"], b"1.1"),
            fields,
            end_stream=not has_body,
            remote_addr=ip,
            scheme=self.proto,
        )

    def direct(self, tunnel: Tunnel, client: HeadLimitedHttpProtocol, cycle: RequestResponseCycle, host: bytes) -> bool:
        """Forward a request whose body has fully arrived, answering it from callbacks.

        Returns False, having done nothing, for anything the ASGI path must handle: a body
        still arriving, ``Expect: 100-continue``, a body over the limit or over the stream's
        first send window, a tunnel that is going away or refuses the stream.
        """
        if cycle.more_body or cycle.waiting_for_100_continue or tunnel.draining or tunnel.closed:
            return False
        scope: Scope = cycle.scope  # type: ignore[assignment]
        if _head_problem(scope) is not None:
            return False
        body = cycle.body
        conn = tunnel.conn
        if len(body) > conn.new_stream_window or (self.max_body and len(body) > self.max_body):
            return False
        if body and len(body) > tunnel.room:  # no room in the buffer budget: the ASGI path waits for it
            return False
        decision = self.rules.judge(tunnel, scope, bytes(body))
        if decision is not None and decision.answer is not None:
            if cycle.flow.write_paused:
                return False  # the ASGI path answers (the decision is kept: judged once)
            self._answer_direct(tunnel, client, cycle, host, decision)
            return True
        length, chunked = _body_length(scope["headers"])
        has_body = chunked or length > 0
        ip = _client_ip(scope)
        if not self.slots.take(tunnel, ip):
            return False  # the ASGI path answers 429
        try:
            stream_id = self._open(tunnel, scope, host, has_body, decision)
        except (ProtocolError, ValueError):
            self.slots.give_back(tunnel, ip)
            return False  # the ASGI path meets the same refusal and answers it
        if has_body:
            conn.send_data(stream_id, bytes(body), end_stream=True)
            cycle.body = bytearray()
        cycle.flow.resume_reading()  # as receive() would: a large body paused reading
        stream = Stream(stream_id)
        tunnel.open(stream)
        tunnel.flush()
        DirectExchange(tunnel, stream, cycle, client, self.slots, ip, decision)
        return True

    def _answer_direct(
        self, tunnel: Tunnel, client: HeadLimitedHttpProtocol, cycle: RequestResponseCycle, host: bytes, decision: Decision
    ) -> None:
        """Answer as a rule says, from the callback (or after its ``delay``, from a timer)."""
        answer = decision.answer
        assert answer is not None
        scope: Scope = cycle.scope  # type: ignore[assignment]
        body = bytes(cycle.body)
        cycle.body = bytearray()
        cycle.flow.resume_reading()
        self.rules.notify(tunnel, scope, self._fields(scope, host), decision, body)

        def respond() -> None:
            if cycle.disconnected or client.transport.is_closing():
                return
            if answer.drop:
                client.abort()
                return
            if cycle.flow.write_paused:  # a response before it on the connection is still going
                client.abort()
                return
            for message in answer_messages(answer):
                _send_now(cycle, message)

        if answer.delay > 0:
            client.loop.call_later(answer.delay, respond)
        else:
            respond()

    async def __call__(self, tunnel: Tunnel, scope: Scope, receive: Receive, send: Send, host: bytes) -> None:
        """Forward one request to ``tunnel`` and stream its response back."""
        problem = _head_problem(scope)
        if problem is not None:
            await send_plain(send, 400, f"{problem}\n", close=True)
            return
        length, chunked = _body_length(scope["headers"])
        if self.max_body and length > self.max_body:
            text = f"request body of {length} bytes is larger than the relay's limit of {format_size(self.max_body)}\n"
            await send_plain(send, 413, text, close=True)
            return
        decision = self.rules.judge(tunnel, scope)
        if decision is not None and decision.answer is not None:
            self.rules.notify(tunnel, scope, self._fields(scope, host), decision)
            await _answer(decision, scope, send)
            return
        if tunnel.draining or tunnel.closed:
            await send_plain(send, 503, f"tunnel {tunnel.name} is restarting; try again\n")
            return
        has_body = chunked or length > 0
        ip = _client_ip(scope)
        if not self.slots.take(tunnel, ip):
            text = _over_share(tunnel, ip, self.slots, self.peer_errors)
            for message in _plain(429, text, close=True, extra=[_RETRY_AFTER]):
                await send(message)
            return
        try:
            stream_id = self._open(tunnel, scope, host, has_body, decision)
        except (ProtocolError, ValueError) as exc:
            self.slots.give_back(tunnel, ip)
            await _refuse_open(send, tunnel, exc)
            return
        try:
            await self._forward(tunnel, Stream(stream_id), scope, receive, send, has_body, ip, decision)
        finally:
            self.slots.give_back(tunnel, ip)

    async def _forward(
        self,
        tunnel: Tunnel,
        stream: Stream,
        scope: Scope,
        receive: Receive,
        send: Send,
        has_body: bool,
        ip: str,
        decision: Decision | None = None,
    ) -> None:
        tunnel.open(stream)
        tunnel.flush()
        client: HeadLimitedHttpProtocol | None = (scope.get("extensions") or {}).get(CONNECTION_EXTENSION)
        if client is not None:
            client.lost_callback = stream.on_client_gone
        uploader = None
        if has_body:
            uploader = asyncio.get_running_loop().create_task(self._upload(tunnel, stream, receive, ip))
        responded = False
        try:
            responded = await self._respond(tunnel, stream, scope, send, client, decision)
        finally:
            if client is not None:
                client.lost_callback = None
            request_sent = True
            if uploader is not None:
                if not uploader.done():
                    uploader.cancel()
                    request_sent = False
                elif uploader.cancelled() or uploader.exception() is not None or not uploader.result():
                    request_sent = False
            tunnel.forget(stream, complete=responded and request_sent)

    async def _upload(self, tunnel: Tunnel, stream: Stream, receive: Receive, ip: str) -> bool:
        """Send the request body within the send window; True once all of it was sent.

        Only the time spent waiting for the client counts towards ``body_timeout``: while the
        agent's window is full the client is not asked for more.
        """
        conn = tunnel.conn
        stream_id = stream.id
        total = 0
        try:
            while True:
                try:
                    async with asyncio.timeout(self.body_timeout):
                        message = await receive()
                except TimeoutError:
                    self._stalled(tunnel, stream, ip, total)
                    return False
                if message["type"] != "http.request":
                    stream.on_client_gone()
                    return False
                body: bytes = message.get("body", b"")
                more = message.get("more_body", False)
                total += len(body)
                if self.max_body and total > self.max_body:
                    reason = f"request body is larger than the relay's limit of {format_size(self.max_body)}"
                    conn.reset_stream(stream_id, ErrorCode.TOO_LARGE, reason)
                    tunnel.flush()
                    stream.fail(StreamReset(stream_id, int(ErrorCode.TOO_LARGE), reason))
                    return False
                while True:
                    if stream.failure is not None or stream.client_gone or tunnel.closed:
                        return False
                    window = tunnel.sendable(stream)  # 0: wait for credit or buffer room
                    if len(body) <= window:
                        conn.send_data(stream_id, body, end_stream=not more)
                        break
                    if window:
                        conn.send_data(stream_id, body[:window])
                        body = body[window:]
                        tunnel.flush()
                    await stream.wait_window()
                tunnel.flush()
                if not more:
                    return True
        except DevtunnelError as exc:  # the stream was closed under us (reset, tunnel gone)
            log.debug("tunnel %s: upload on stream %d stopped: %s", tunnel.name, stream_id, exc)
            return False

    def _stalled(self, tunnel: Tunnel, stream: Stream, ip: str, received: int) -> None:
        """Give up on a request body that stopped arriving: reset the stream towards the agent
        (the local service sees an aborted request) and fail it here (the client gets 408, or
        a closed connection once its response has started)."""
        reason = f"the client sent no request body for {self.body_timeout:g} s (after {received} bytes)"
        self.peer_errors.log(
            "body-stalled", logging.WARNING, "tunnel %s: request body from %s stalled after %d bytes; dropped",
            tunnel.name, ip, received,
        )
        if not tunnel.closed and stream.failure is None:
            tunnel.conn.reset_stream(stream.id, ErrorCode.CANCEL, reason)
            tunnel.flush()
        stream.fail(BodyStalled(stream.id, int(ErrorCode.CANCEL), reason))

    async def _respond(
        self,
        tunnel: Tunnel,
        stream: Stream,
        scope: Scope,
        send: Send,
        client: HeadLimitedHttpProtocol | None,
        decision: Decision | None = None,
    ) -> bool:
        """Write the response to the client; True when it completed."""
        while stream.head is None:
            if stream.client_gone:
                return False
            if stream.failure is not None:
                await self._answer_failure(tunnel, stream.failure, send)
                return False
            await stream.wait()
        start = _response_start(stream, decision)
        if start is None:
            await send_plain(send, 502, _invalid_status(tunnel, stream))
            return False
        conn = tunnel.conn
        chunks = stream.chunks
        try:
            await send(start)
            while True:
                if chunks:
                    data = chunks.popleft()
                    last = stream.ended and not chunks
                    await send({"type": "http.response.body", "body": data, "more_body": not last})
                    if last:
                        return True
                    if not stream.ended:
                        conn.acknowledge(stream.id, len(data))
                        tunnel.flush()
                elif stream.ended:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return True
                elif stream.client_gone:
                    return False
                elif stream.failure is not None:
                    # The response has started: the only honest signal left is a broken connection.
                    if client is not None:
                        client.abort()
                    return False
                else:
                    await stream.wait()
        except (RuntimeError, ValueError) as exc:  # uvicorn refused what the agent sent
            _log_invalid(tunnel, scope, exc)
            if client is not None:
                client.abort()
            return False

    async def _answer_failure(self, tunnel: Tunnel, failure: StreamReset, send: Send) -> None:
        for message in _failure_answer(tunnel, failure):
            await send(message)


def _plain(
    status: int, text: str, *, close: bool = False, extra: list[tuple[bytes, bytes]] | None = None
) -> list[dict[str, Any]]:
    """The ASGI messages of a short text/plain response."""
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    if extra:
        headers += extra
    if close:
        headers.append((b"connection", b"close"))
    return [{"type": "http.response.start", "status": status, "headers": headers}, {"type": "http.response.body", "body": body}]


def _failure_answer(tunnel: Tunnel, failure: StreamReset) -> list[dict[str, Any]]:
    """What the client gets when the stream failed before the response started."""
    if isinstance(failure, BodyStalled):
        return _plain(408, f"{failure.reason}\n", close=True)
    if failure.code == ErrorCode.TOO_LARGE:
        return _plain(413, f"{failure.reason}\n", close=True)
    if failure.code == ErrorCode.REFUSED_STREAM:
        return _plain(503, f"tunnel {tunnel.name} is busy: {failure.reason}\n")
    if tunnel.closed:
        return _plain(502, f"tunnel {tunnel.name} went offline before answering\n")
    return _plain(502, f"tunnel {tunnel.name} could not answer: {failure.reason or 'stream reset'}\n")


def _response_start(stream: Stream, decision: Decision | None = None) -> dict[str, Any] | None:
    """The ``http.response.start`` message for the agent's response head (the rules' header
    edits applied); None if its status is invalid."""
    head = stream.head
    assert head is not None
    status = head.status
    if not 200 <= status < 600:
        return None
    headers = forward_response_headers(head.headers, body_allowed=status not in _NO_BODY_STATUS)
    return {"type": "http.response.start", "status": status, "headers": edit_response(headers, decision)}


async def _answer(decision: Decision, scope: Scope, send: Send, *, websocket: bool = False) -> None:
    """Answer as a rule says, in a task: after its ``delay``; ``drop`` closes the connection."""
    answer = decision.answer
    assert answer is not None
    if answer.delay > 0:
        await asyncio.sleep(answer.delay)
    if answer.drop:
        client = (scope.get("extensions") or {}).get(CONNECTION_EXTENSION)
        if client is not None:
            client.abort()
            return
        if websocket:
            await send({"type": "websocket.close", "code": 1000})
            return
    for message in answer_messages(answer, websocket=websocket):
        await send(message)


def _invalid_status(tunnel: Tunnel, stream: Stream) -> str:
    assert stream.head is not None
    return f"tunnel {tunnel.name} answered with invalid status {stream.head.status}\n"


def _log_invalid(tunnel: Tunnel, scope: Scope, exc: Exception) -> None:
    log.warning("tunnel %s: response to %s %s is not valid HTTP: %s", tunnel.name, scope["method"], scope["path"], exc)


def _send_now(cycle: RequestResponseCycle, message: dict[str, Any]) -> None:
    """Run uvicorn's ``send`` for ``message`` to its end, which it reaches without waiting
    unless the transport paused writing (the caller checked that it did not)."""
    step = cycle.send(message)  # type: ignore[arg-type]
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()
    raise RuntimeError("the response cycle waited for the transport although it was writable")


class DirectExchange:
    """Answers one forwarded request from callbacks: the stream's ``wake``, the client
    transport's ``resume_writing`` and its loss.

    It does what ``HttpForwarder._respond`` does in a task, through the same uvicorn response
    cycle (which writes the status line, framing and keep-alive), with the same
    back-pressure: body bytes are acknowledged to the agent only once written, and nothing is
    written while the client's transport asks to pause.
    """

    __slots__ = (
        "_tunnel", "_stream", "_cycle", "_client", "_slots", "_ip", "_loop", "_scheduled", "_started", "_done",
        "_decision",
    )

    def __init__(
        self,
        tunnel: Tunnel,
        stream: Stream,
        cycle: RequestResponseCycle,
        client: HeadLimitedHttpProtocol,
        slots: ClientSlots,
        ip: str,
        decision: Decision | None = None,
    ) -> None:
        self._decision = decision
        self._tunnel = tunnel
        self._stream = stream
        self._cycle = cycle
        self._client = client
        self._slots = slots
        self._ip = ip
        self._loop = client.loop
        self._scheduled = False
        self._started = False
        self._done = False
        stream.listener = self.wake
        client.lost_callback = stream.on_client_gone
        client.writable_callback = self.wake

    def wake(self) -> None:
        """Run a step once the current callbacks are done (all frames of a message handled)."""
        if not self._scheduled and not self._done:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        if self._done:
            return
        try:
            self._step()
        except (RuntimeError, ValueError) as exc:  # uvicorn refused what the agent sent
            _log_invalid(self._tunnel, self._cycle.scope, exc)  # type: ignore[arg-type]
            self._client.abort()
            self._finish(complete=False)
        except Exception:  # a defect must not escape into the loop's callback
            log.exception("tunnel %s: answering stream %d failed", self._tunnel.name, self._stream.id)
            self._client.abort()
            self._finish(complete=False)

    def _step(self) -> None:
        stream = self._stream
        cycle = self._cycle
        if stream.client_gone or cycle.disconnected:
            self._finish(complete=False)
            return
        flow = cycle.flow
        if flow.write_paused:
            return  # resume_writing wakes us
        if not self._started:
            if stream.head is None:
                if stream.failure is not None:
                    for message in _failure_answer(self._tunnel, stream.failure):
                        _send_now(cycle, message)  # the head waits for the body: one write
                    self._finish(complete=False)
                return
            start = _response_start(stream, self._decision)
            if start is None:
                for message in _plain(502, _invalid_status(self._tunnel, stream)):
                    _send_now(cycle, message)
                self._finish(complete=False)
                return
            self._started = True
            _send_now(cycle, start)
        chunks = stream.chunks
        while chunks:
            if flow.write_paused:
                return
            data = chunks.popleft()
            last = stream.ended and not chunks
            _send_now(cycle, {"type": "http.response.body", "body": data, "more_body": not last})
            if last:
                self._finish(complete=True)
                return
            if not stream.ended:
                self._tunnel.conn.acknowledge(stream.id, len(data))
                self._tunnel.flush()
        if stream.ended:
            _send_now(cycle, {"type": "http.response.body", "body": b"", "more_body": False})
            self._finish(complete=True)
        elif stream.failure is not None:
            # The response has started: the only honest signal left is a broken connection.
            self._client.abort()
            self._finish(complete=False)

    def _finish(self, *, complete: bool) -> None:
        self._done = True
        stream = self._stream
        stream.listener = None
        client = self._client
        if client.lost_callback == stream.on_client_gone:
            client.lost_callback = None
        if client.writable_callback == self.wake:
            client.writable_callback = None
        self._slots.give_back(self._tunnel, self._ip)
        self._tunnel.forget(stream, complete=complete)


async def _refuse_open(send: Send, tunnel: Tunnel, exc: ProtocolError | ValueError) -> None:
    """Answer a request the tunnel connection would not open a stream for."""
    code = getattr(exc, "code", None)
    if code == ErrorCode.REFUSED_STREAM:
        await send_plain(send, 503, f"tunnel {tunnel.name} is busy: {exc}; try again\n")
    elif code == ErrorCode.TOO_LARGE or isinstance(exc, ValueError):
        await send_plain(send, 431, f"request head too large for the tunnel: {exc}\n", close=True)
    else:
        await send_plain(send, 502, f"tunnel {tunnel.name} cannot take requests: {exc}\n")


def _sendable_close_code(code: int) -> int:
    return _UNSENDABLE_CLOSE.get(code, code)


class WebSocketForwarder:
    """Passes public WebSocket connections through tunnels (one instance per relay)."""

    def __init__(
        self, *, proto: str, slots: ClientSlots, peer_errors: PeerErrorLog, rules: RuleBook | None = None
    ) -> None:
        self.rules = rules or RuleBook()
        self.proto = proto
        self.slots = slots
        self.peer_errors = peer_errors
        self._proto_bytes = b"https" if proto == "https" else b"http"

    async def __call__(self, tunnel: Tunnel, scope: Scope, receive: Receive, send: Send, host: bytes) -> None:
        """Open a WebSocket stream; accept the client on 101, else send the agent's answer."""
        try:
            await self._forward(tunnel, scope, receive, send, host)
        except OSError as exc:  # uvicorn's ClientDisconnected: the client left mid-handshake
            log.debug("tunnel %s: websocket client left: %r", tunnel.name, exc)

    async def _forward(self, tunnel: Tunnel, scope: Scope, receive: Receive, send: Send, host: bytes) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        problem = _head_problem(scope)
        if problem is not None:
            await _deny(send, 400, f"{problem}\n")
            return
        conn = tunnel.conn
        ip = _client_ip(scope)
        decision = self.rules.judge(tunnel, scope)
        if decision is not None and decision.answer is not None:
            fields = forward_request_headers(scope["headers"], host, ip.encode(), self._proto_bytes, websocket=True)
            self.rules.notify(tunnel, scope, fields, decision)
            if decision.answer.drop:
                protocol = getattr(receive, "__self__", None)
                transport = getattr(protocol, "transport", None)
                if transport is not None:
                    transport.abort()
                    return
            await _answer(decision, scope, send, websocket=True)
            return
        if not self.slots.take(tunnel, ip):
            await _deny(send, 429, _over_share(tunnel, ip, self.slots, self.peer_errors), [_RETRY_AFTER])
            return
        try:
            await self._pass_through(tunnel, conn, scope, receive, send, host, ip, decision)
        finally:
            self.slots.give_back(tunnel, ip)

    async def _pass_through(
        self,
        tunnel: Tunnel,
        conn: RelayConnection,
        scope: Scope,
        receive: Receive,
        send: Send,
        host: bytes,
        ip: str,
        decision: Decision | None = None,
    ) -> None:
        raw = forward_request_headers(scope["headers"], host, ip.encode(), self._proto_bytes, websocket=True)
        fields = edit_request(raw, decision) if decision is not None else strip_rule_header(raw)
        try:
            stream_id = conn.open_request(
                b"GET", _target(scope), b"1.1", fields, end_stream=True, remote_addr=ip, scheme=self.proto, websocket=True
            )
        except (ProtocolError, ValueError) as exc:
            await _deny(send, 503, f"tunnel {tunnel.name} cannot take requests: {exc}\n")
            return
        stream = Stream(stream_id, websocket=True)
        tunnel.open(stream)
        tunnel.flush()
        try:
            while stream.head is None:
                if stream.failure is not None:
                    await _deny(send, 502, f"tunnel {tunnel.name} went offline before answering\n")
                    return
                await stream.wait()
            head = stream.head
            if head.status != 101:
                await self._deny_with_response(tunnel, stream, send)
                return
            subprotocol, extra = websocket_accept_headers(head.headers)
            extra = edit_response(extra, decision)
            try:
                await send(
                    {
                        "type": "websocket.accept",
                        "subprotocol": subprotocol.decode("latin-1") if subprotocol else None,
                        "headers": extra,
                    }
                )
            except OSError:  # the client left while the local service was answering
                tunnel.forget(stream, complete=False)
                raise
            pump = asyncio.get_running_loop().create_task(self._client_to_agent(tunnel, stream, receive))
            try:
                await self._agent_to_client(tunnel, stream, send)
            finally:
                if not pump.done():
                    stream.client_gone = True
                    stream.wake_window()
                    # Let the client's close reply reach the agent, but do not wait forever.
                    try:
                        await asyncio.wait_for(pump, 10.0)
                    except asyncio.TimeoutError:
                        pass
        finally:
            tunnel.forget(stream, complete=True)

    async def _deny_with_response(self, tunnel: Tunnel, stream: Stream, send: Send) -> None:
        head = stream.head
        assert head is not None
        await send(
            {
                "type": "websocket.http.response.start",
                "status": head.status,
                "headers": forward_response_headers(head.headers, body_allowed=True),
            }
        )
        while True:
            while stream.chunks:
                data = stream.chunks.popleft()
                if isinstance(data, bytes):
                    await send({"type": "websocket.http.response.body", "body": data, "more_body": True})
            if stream.ended or stream.failure is not None:
                break
            await stream.wait()
        await send({"type": "websocket.http.response.body", "body": b"", "more_body": False})

    async def _agent_to_client(self, tunnel: Tunnel, stream: Stream, send: Send) -> None:
        conn = tunnel.conn
        fragments: list[bytes] = []
        try:
            while True:
                while stream.chunks:
                    event = stream.chunks.popleft()
                    if isinstance(event, WebSocketClosed):
                        code = _sendable_close_code(event.code)
                        await send({"type": "websocket.close", "code": code, "reason": event.reason})
                        return
                    if isinstance(event, bytes):  # body bytes on a WebSocket stream: ignore
                        continue
                    fragments.append(event.data)
                    if event.fin:
                        data = fragments[0] if len(fragments) == 1 else b"".join(fragments)
                        fragments.clear()
                        if event.text:
                            await send({"type": "websocket.send", "text": data.decode("utf-8", "replace")})
                        else:
                            await send({"type": "websocket.send", "bytes": data})
                    if not stream.client_gone and not tunnel.closed:
                        conn.acknowledge(stream.id, len(event.data))
                        tunnel.flush()
                if stream.client_gone:
                    return
                if stream.failure is not None:
                    await send({"type": "websocket.close", "code": 1011, "reason": "tunnel went offline"})
                    return
                await stream.wait()
        except DevtunnelError as exc:
            log.debug("tunnel %s: websocket stream %d ended: %s", tunnel.name, stream.id, exc)
        except Exception as exc:  # uvicorn raises ClientDisconnected once the client is gone
            log.debug("tunnel %s: websocket client of stream %d is gone: %r", tunnel.name, stream.id, exc)

    async def _client_to_agent(self, tunnel: Tunnel, stream: Stream, receive: Receive) -> None:
        try:
            await self._pump_client(tunnel, stream, receive)
        except DevtunnelError as exc:  # the stream closed under us
            log.debug("tunnel %s: websocket stream %d: %s", tunnel.name, stream.id, exc)

    async def _pump_client(self, tunnel: Tunnel, stream: Stream, receive: Receive) -> None:
        conn = tunnel.conn
        stream_id = stream.id
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                if not tunnel.closed and stream.failure is None:
                    code = _sendable_close_code(int(message.get("code") or 1000))
                    conn.send_ws_close(stream_id, code, message.get("reason") or "")
                    tunnel.flush()
                stream.on_client_gone()
                return
            text = message.get("text")
            data: bytes = text.encode() if text is not None else message.get("bytes") or b""
            is_text = text is not None
            while True:
                if stream.failure is not None or tunnel.closed:
                    return
                window = tunnel.sendable(stream)  # 0: wait for credit or buffer room
                if len(data) <= window:
                    conn.send_ws_message(stream_id, data, text=is_text, fin=True)
                    break
                if window:
                    conn.send_ws_message(stream_id, data[:window], text=is_text, fin=False)
                    data = data[window:]
                    tunnel.flush()
                await stream.wait_window()
            tunnel.flush()


async def _deny(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "websocket.http.response.body", "body": body})
