"""The relay's direct path: a request whose whole body came with its head is answered from
callbacks (``DirectExchange``), without an ASGI task, on uvicorn's own response cycle.
``HttpForwarder.direct`` (``http_proxy.py``) decides which requests take it.

The response is written as uvicorn's ``RequestResponseCycle.send`` would write it, by
``response_head`` (the status line and headers: uvicorn's keep-alive and close rules, framing
for HEAD, 204, 304 and a response without a length; an HTTP/1.0 client's as ``http.frame_http10``
says) and ``body_bytes`` (the framing of each
body message), without a coroutine or message dicts; the head goes out in one write with the
first body bytes ready. ``tests/net/test_uvicorn_contract.py`` compares both with uvicorn's.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from uvicorn.protocols.http.httptools_impl import HEADER_VALUE_RE, STATUS_LINE
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from devtunnel.protocol.events import StreamReset
from devtunnel.values.http1 import NOT_IN_TOKEN, refused_bytes
from devtunnel.relay.asgi import plain
from devtunnel.relay.headers import request_host
from devtunnel.relay.http import DirectCycle, HeadLimitedHttpProtocol, frame_http10, not_modified, until_close
from devtunnel.relay.http_responses import (
    body_refused, failure_answer, head_refused, invalid_response, log_invalid, response_start,
)
from devtunnel.relay.link import AgentLink, RelayStream
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.slots import ClientSlots
from devtunnel.rules import Decision

log = logging.getLogger("devtunnel.relay")

# uvicorn's own rule for response header values, as a translate table; names are held to the
# stricter rule of values.http1 (a token: uvicorn lets an empty name and bytes above 0x7f through).
_VALUE_REFUSED = refused_bytes(HEADER_VALUE_RE)


def response_head(cycle: DirectCycle, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The bytes uvicorn's ``RequestResponseCycle.send`` writes for an ``http.response.start``
    message, with the same effects on ``cycle`` (response started, keep-alive, framing, the
    access log line) and the same errors (``RuntimeError`` for a header it refuses), and for a
    name that is not a token (``values.http1``), which uvicorn would write."""
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    default_headers = cycle.default_headers
    if default_headers:
        headers = default_headers + list(headers)
    if cycle.access_log:
        scope: Any = cycle.scope
        cycle.access_logger.info(
            '%s - "%s %s HTTP/%s" %d', get_client_addr(scope), scope["method"], get_path_with_query_string(scope),
            scope["http_version"], status,
        )
    content = [STATUS_LINE[status]]
    has_connection_close = False
    for name, value in headers:
        if not name or 0 in name.translate(NOT_IN_TOKEN):  # (uvicorn: HEADER_RE.search(name))
            raise RuntimeError("Invalid HTTP header name.")
        if 0 in value.translate(_VALUE_REFUSED):  # HEADER_VALUE_RE.search(value)
            raise RuntimeError("Invalid HTTP header value.")
        name = name.lower()
        if name == b"content-length" and cycle.chunked_encoding is None:
            cycle.expected_content_length = int(value.decode())
            cycle.chunked_encoding = False
        elif name == b"transfer-encoding" and value.lower() == b"chunked":
            cycle.expected_content_length = 0
            cycle.chunked_encoding = True
        elif name == b"connection":
            if b"close" in [token.lower().strip() for token in value.split(b",")]:
                cycle.keep_alive = False
                has_connection_close = True
        content += (name, b": ", value, b"\r\n")
    if status == 304:
        not_modified(cycle)
    unframed = cycle.chunked_encoding is None and cycle.method != "HEAD" and status not in (204, 304)
    if cycle.http_version == "1.0":  # as http.Http10Cycle has uvicorn's send write it
        frame_http10(cycle, unframed)
        if cycle.keep_alive:
            content.append(b"connection: keep-alive\r\n")
        elif not has_connection_close:
            content.append(b"connection: close\r\n")
    else:
        if not cycle.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if unframed:
            cycle.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
    content.append(b"\r\n")
    return b"".join(content)


def body_bytes(cycle: DirectCycle, body: bytes, more_body: bool) -> bytes:
    """The bytes uvicorn's ``RequestResponseCycle.send`` writes for an ``http.response.body``
    message (nothing for HEAD; chunk framing; the body as it is within Content-Length), and
    its ``RuntimeError`` for a body longer than Content-Length. The caller writes them, then
    calls ``complete`` after the last."""
    if cycle.method == "HEAD":
        cycle.expected_content_length = 0
        return b""
    if cycle.chunked_encoding:
        if more_body:
            return b"%x\r\n%b\r\n" % (len(body), body) if body else b""
        return b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    if len(body) > cycle.expected_content_length:
        raise RuntimeError("Response content longer than Content-Length")
    cycle.expected_content_length -= len(body)
    return body


def complete(cycle: DirectCycle) -> None:
    """End the response as uvicorn's ``send`` does after the last body message: the length
    check, then the connection closes unless kept alive, and the protocol goes on to the next
    request (``on_response``). (uvicorn also sets the cycle's ``message_event``, which only
    its ``receive`` waits on: nothing on the direct path does.)"""
    if cycle.expected_content_length != 0:
        if not until_close(cycle.expected_content_length):
            raise RuntimeError("Response content shorter than Content-Length")
        cycle.expected_content_length = 0  # a body ended by the close: what came was all of it
    cycle.response_complete = True
    if not cycle.keep_alive:
        cycle._protocol.close_answered()
    cycle.on_response()


def write_messages(cycle: DirectCycle, messages: list[dict[str, Any]]) -> None:
    """Write a whole response given as a start and one last body message, in one write."""
    start, body = messages
    head = response_head(cycle, start["status"], start.get("headers", []))
    data = body_bytes(cycle, body.get("body", b""), body.get("more_body", False))
    cycle.transport.write(head + data)
    complete(cycle)


class Forwarder(Protocol):
    """What an exchange asks of the forwarder that started it (``http_proxy.HttpForwarder``)."""

    slots: ClientSlots
    peer_errors: PeerErrorLog

    def resend(
        self,
        tunnel: AgentLink,
        failure: StreamReset,
        scope: Any,
        host: bytes,
        ip: str,
        decision: Decision | None,
        body: bytes | None,
        tried: list[AgentLink],
    ) -> tuple[AgentLink, RelayStream] | None:
        """Send a request ``tunnel`` refused to another pool member (``HttpForwarder.resend``)."""


class DirectExchange:
    """Answers one forwarded request from callbacks: the stream's ``wake``, the client
    transport's ``resume_writing`` and its loss.

    It does what ``HttpForwarder._respond`` does in a task, on the same uvicorn response
    cycle, writing what uvicorn's ``send`` would (``response_head``, ``body_bytes``,
    ``complete``), with the same back-pressure: body bytes are acknowledged to the agent only
    once written, and nothing is written while the client's transport asks to pause.

    A stream the agent refused before answering goes to another pool member when it can
    (``HttpForwarder.resend``, with ``body``: the request body as sent, when it was kept):
    another exchange answers then, on the same cycle.
    """

    __slots__ = (
        "_tunnel", "_stream", "_cycle", "_client", "_forwarder", "_ip", "_loop", "_scheduled", "_started", "_done",
        "_decision", "_body", "_tried",
    )
    # Set only on an exchange for a request sent again (_resend): a slot left unset costs a
    # request nothing; getattr reads it with its default.
    _tried: list[AgentLink]

    def __init__(
        self,
        tunnel: AgentLink,
        stream: RelayStream,
        cycle: DirectCycle,
        client: HeadLimitedHttpProtocol,
        forwarder: Forwarder,
        ip: str,
        decision: Decision | None = None,
        body: bytes | None = None,
    ) -> None:
        self._decision = decision
        self._body = body
        self._tunnel = tunnel
        self._stream = stream
        self._cycle = cycle
        self._client = client
        self._forwarder = forwarder
        self._ip = ip
        self._loop = client.loop
        self._scheduled = False
        self._started = False
        self._done = False
        stream.listener = self.wake
        stream.client = client
        client.lost_callback = stream.on_client_gone
        client.writable_callback = self.wake

    def wake(self) -> None:
        """Run a step once all the frames of the agent's message are handled: right after,
        when the tunnel is handing them out (``AgentLink.ready``), else once the current
        callbacks are done (the client's transport resumed writing or was lost)."""
        if not self._scheduled and not self._done:
            self._scheduled = True
            ready = self._tunnel.ready
            if ready is not None:
                ready.append(self._run)
            else:
                self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        if self._done:
            return
        try:
            self._step()
        except (RuntimeError, ValueError) as exc:  # uvicorn refused what the agent sent
            log_invalid(self._forwarder.peer_errors, self._tunnel, self._cycle.scope, exc)
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
        head = b""
        if not self._started:
            if stream.head is None:
                if stream.failure is not None and not self._resend(stream.failure):
                    write_messages(cycle, failure_answer(self._tunnel, stream.failure))
                    self._finish(complete=False)
                return
            start = response_start(stream, request_host(self._cycle.headers), self._decision)
            if start is None:
                write_messages(cycle, plain(502, invalid_response(self._tunnel, stream)))
                self._finish(complete=False)
                return
            self._started = True
            status = start["status"]
            try:
                head = response_head(cycle, status, start["headers"])  # written with the first body bytes
            except RuntimeError:  # a header uvicorn's rule refuses: nothing is written yet
                refusal = head_refused(cycle, self._forwarder.peer_errors, self._tunnel, cycle.scope, start["headers"])
                write_messages(cycle, refusal)
                self._finish(complete=False)
                return
        transport = cycle.transport
        tunnel = self._tunnel
        chunks = stream.chunks
        while chunks:
            if flow.write_paused:
                return  # (never before the head is written: the first pass found it writable)
            data = chunks.popleft()
            tunnel.taken(stream, len(data))
            last = stream.ended and not chunks
            try:
                out = body_bytes(cycle, data, not last)
            except RuntimeError:  # longer than its length (a 204's or 304's: none)
                if not head:
                    raise  # the head is out: the connection is dropped (_run)
                self._refuse_body(status, longer=True)  # (status: set with the head)
                return
            if head:
                if last and cycle.expected_content_length and not until_close(cycle.expected_content_length):
                    self._refuse_body(status, longer=False)  # (complete would find it, the head written)
                    return
                transport.writelines((head, out))
                head = b""
            elif out:
                transport.write(out)
            if last:
                complete(cycle)
                self._finish(complete=True)
                return
            if not stream.ended:
                tunnel.conn.acknowledge(stream.id, len(data))
                tunnel.flush()
        if stream.ended:
            out = body_bytes(cycle, b"", False)
            if head and cycle.expected_content_length and not until_close(cycle.expected_content_length):
                self._refuse_body(status, longer=False)
                return
            if head or out:
                transport.write(head + out)
            complete(cycle)
            self._finish(complete=True)
            return
        if head:
            transport.write(head)
        if stream.failure is not None:
            # The response has started: the only honest signal left is a broken connection.
            self._client.abort()
            self._finish(complete=False)

    def _refuse_body(self, status: int, *, longer: bool) -> None:
        """Answer 502 for a body that does not fit the head with ``status``, found before the
        head was written (``http_responses.body_refused``); the stream is reset."""
        cycle = self._cycle
        write_messages(cycle, body_refused(cycle, self._forwarder.peer_errors, self._tunnel, cycle.scope, status, longer))
        self._finish(complete=False)

    def _resend(self, failure: StreamReset) -> bool:
        """Send the request to another pool member (``HttpForwarder.resend``); True when one
        took it: a new exchange answers it, and this one is over."""
        tried = getattr(self, "_tried", [])
        cycle = self._cycle
        forwarder = self._forwarder
        resent = forwarder.resend(
            self._tunnel, failure, cycle.scope, request_host(cycle.headers), self._ip, self._decision, self._body, tried
        )
        if resent is None:
            return False
        self._finish(complete=False)
        tunnel, stream = resent
        exchange = DirectExchange(tunnel, stream, cycle, self._client, forwarder, self._ip, self._decision, self._body)
        exchange._tried = tried
        return True

    def _finish(self, *, complete: bool) -> None:
        self._done = True
        stream = self._stream
        stream.listener = None
        client = self._client
        if client.lost_callback == stream.on_client_gone:
            client.lost_callback = None
        if client.writable_callback == self.wake:
            client.writable_callback = None
        self._forwarder.slots.give_back(self._tunnel, self._ip)
        self._tunnel.forget(stream, complete=complete)
