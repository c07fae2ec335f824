"""Forwarding one public HTTP request through a tunnel, streaming both ways.

Request bodies are sent within the stream's send window; response bodies are written to the
client with ASGI ``send`` (which waits for the socket to drain) and only then acknowledged to
the agent, so a slow client slows its own stream; what streams hold of responses their
clients have not read is bounded per agent and for the relay (``link.BufferBudget``).

No client holds a tunnel's streams for free: a request body that stops arriving for
``body_timeout`` seconds is dropped (408), and so is one that trickles in: the time spent
waiting for it may be at most ``body_timeout`` plus a second for each ``body_min_rate`` bytes
received (Apache's ``mod_reqtimeout`` ``MinRate``), so a byte every few seconds no longer holds
a stream, and the local service's request, for ever, while an upload at any reasonable speed
never comes near it. One client address holds at most ``ClientSlots.limit`` of a tunnel's
streams at once (429 beyond).

A request whose whole body came with its head is answered from callbacks instead
(``HttpForwarder.direct``, ``http_direct.DirectExchange``); the rest, in a task (``__call__``).

A request a pool member refused with REFUSED_STREAM (it crossed the member's GOAWAY, or the
member was full) was not processed by it, and goes to another member as it was sent
(``HttpForwarder.resend``), on either path, when the relay still holds all of it: no body, or
a body of at most ``KEPT_BODY`` bytes sent whole, which a pool member's requests keep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from devtunnel.errors import DevtunnelError, ProtocolError
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import Fields, StreamReset
from devtunnel.relay.asgi import (
    Receive,
    Scope,
    Send,
    address,
    client_ip,
    plain,
    request_problem,
    send_plain,
    target,
)
from devtunnel.relay.headers import forward_request_headers, request_host
from devtunnel.relay.http import (
    CONNECTION_EXTENSION, RAW_HEADERS_EXTENSION, BodyTap, DirectCycle, HeadLimitedHttpProtocol, not_modified,
)
from devtunnel.relay.http_direct import DirectExchange, write_messages
from devtunnel.relay.http_responses import (
    body_mismatch, body_refused, failure_answer, head_refused, invalid_response, log_invalid, response_start,
)
from devtunnel.relay.link import AgentLink, BodyStalled, RelayStream
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.pool import Pool
from devtunnel.relay.rules import NOTICE_BODY, RuleBook, answer_messages, edit_request, local_port, send_answer
from devtunnel.relay.slots import RETRY_AFTER_HEADER, ClientSlots, over_share
from devtunnel.rules import Decision
from devtunnel.values.http1 import fields_problem
from devtunnel.values.sizes import format_size
from devtunnel.values.request_head import answer_text
from devtunnel.values.terminal import clipped

log = logging.getLogger("devtunnel.relay")

_HTTP_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0", "2": b"2", "2.0": b"2"}

#: The largest request body a pool member's request keeps, until it is answered, to send it
#: again to another member if the first refuses it (``HttpForwarder.resend``).
KEPT_BODY = 16 * 1024
#: The most times one request is sent again (each time to a member that has not refused it).
MAX_RESENDS = 3


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
        body_min_rate: int = 0,
        peer_errors: PeerErrorLog,
        rules: RuleBook | None = None,
        pools: dict[str, Pool] | None = None,
    ) -> None:
        self.rules = rules or RuleBook()
        self.pools: dict[str, Pool] = pools if pools is not None else {}
        """The agents holding each tunnel name (the relay's registry): where a refused request may go."""
        self.max_body = max_body
        self.proto = proto
        self.body_timeout = body_timeout
        self.body_min_rate = body_min_rate
        self.slots = slots
        self.peer_errors = peer_errors
        self._proto_bytes = proto.encode()

    def _fields(self, scope: Scope, host: bytes, ip: str) -> Fields:
        """The request headers as they go to the agent (before the rules edit them); ``ip`` is
        the scope's ``client_ip``."""
        extensions = scope.get("extensions") or {}
        lowered = scope["headers"]
        raw_headers = extensions.get(RAW_HEADERS_EXTENSION) or lowered
        return forward_request_headers(raw_headers, host, ip.encode(), self._proto_bytes, lowered=lowered)

    def _open(
        self,
        tunnel: AgentLink,
        method: str,
        request_target: bytes,
        http_version: str,
        raw: Fields,
        remote: str,
        has_body: bool,
        decision: Decision | None,
    ) -> int:
        """Queue the request head on the tunnel; returns the stream id. ``raw``: the headers
        as ``forward_request_headers`` makes them (``_fields``), before the rules edit them;
        ``remote``: the client's address as the rules judge it (``RuleBook.client_of``).

        Raises:
            ProtocolError, ValueError: the tunnel connection would not open the stream.
        """
        fields = edit_request(raw, decision) if decision is not None else raw
        return tunnel.conn.open_request(
            method.encode(),
            request_target,
            _HTTP_VERSIONS.get(http_version, b"1.1"),
            fields,
            end_stream=not has_body,
            remote_addr=remote,
            scheme=self.proto,
        )

    def direct(self, tunnel: AgentLink, client: HeadLimitedHttpProtocol, cycle: DirectCycle, host: bytes) -> bool:
        """Forward a request whose body has fully arrived, answering it from callbacks.

        Returns False, having done nothing, for anything the ASGI path must handle: a body
        still arriving, ``Expect: 100-continue``, a body over the limit or over the stream's
        first send window, a tunnel that is going away or refuses the stream.
        """
        if cycle.more_body or cycle.waiting_for_100_continue or tunnel.draining or tunnel.closed:
            return False
        # The head passed request_problem's check already: HeadLimitedHttpProtocol, the only
        # caller, refuses a head with a problem before it makes a cycle. The request's scope
        # is asked for only by the rules (when any are in force) and an answer of theirs.
        body = cycle.body
        conn = tunnel.conn
        if body:
            size = len(body)
            if size > conn.new_stream_window or (self.max_body and size > self.max_body):
                return False
            if size > tunnel.room:  # no room in the buffer budget: the ASGI path waits for it
                return False
        rules = self.rules
        decision = rules.judge(tunnel, cycle.scope, bytes(body)) if rules.in_force else None
        if decision is not None and decision.answer is not None:
            if cycle.flow.write_paused:
                return False  # the ASGI path answers (the decision is kept: judged once)
            self._answer_direct(tunnel, client, cycle, host, decision)
            return True
        length, chunked = _body_length(cycle.headers)
        has_body = chunked or length > 0
        ip = address(client.client)  # (the scope's client_ip)
        if not self.slots.take(tunnel, ip):
            return False  # the ASGI path answers 429
        try:
            remote = rules.client_of(ip, cycle.headers, local_port(cycle.scope) if rules.forwarded_ports else 0)
            raw = forward_request_headers(cycle.raw_headers, host, ip.encode(), self._proto_bytes, lowered=cycle.headers)
            request_target = cycle.target
            stream_id = self._open(tunnel, cycle.method, request_target, cycle.http_version, raw, remote, has_body, decision)
        except (ProtocolError, ValueError):
            self.slots.give_back(tunnel, ip)
            return False  # the ASGI path meets the same refusal and answers it
        kept = None
        if has_body:
            data = bytes(body)
            conn.send_data(stream_id, data, end_stream=True)
            cycle.body = bytearray()
            if tunnel.pooled and len(data) <= KEPT_BODY:
                kept = data  # to send again if the member refuses it (resend)
        flow = cycle.flow
        if flow.read_paused:  # as receive() would: a large body paused reading
            flow.resume_reading()
        stream = RelayStream(stream_id)
        tunnel.open(stream)
        tunnel.flush()
        DirectExchange(tunnel, stream, cycle, client, self, ip, decision, kept)
        return True

    def resend(
        self,
        tunnel: AgentLink,
        failure: StreamReset,
        scope: Scope,
        host: bytes,
        ip: str,
        decision: Decision | None,
        body: bytes | None,
        tried: list[AgentLink],
    ) -> tuple[AgentLink, RelayStream] | None:
        """Send a request ``tunnel`` refused to another member of its pool, as it was sent.

        A stream reset with REFUSED_STREAM was not processed by the agent (it crossed the
        agent's GOAWAY, or the agent had its maximum of streams), so the request goes to the
        next member in turn that takes new requests, has room for it (the client within its
        share of it too) and has not refused it (``tried``, to which ``tunnel`` is added), at
        most ``MAX_RESENDS`` times: with the same
        head, the same decision of the rules (judged once; only to a member with the same rules)
        and ``body``, the whole body as it was sent (None: not kept, or there is none).

        Returns the member and its stream, opened and tracked, with the client's slot on it
        taken (the caller gives back the one on ``tunnel``); None when the request cannot go
        elsewhere: the caller answers ``failure`` as before.
        """
        tried.append(tunnel)
        if failure.code != ErrorCode.REFUSED_STREAM or len(tried) > MAX_RESENDS:
            return None
        length, chunked = _body_length(scope["headers"])
        has_body = chunked or length > 0
        if has_body and body is None:
            return None  # part of it is gone: it cannot be sent as the client sent it
        pool = self.pools.get(tunnel.name)
        if pool is None or pool.token != tunnel.token:
            return None
        other = pool.another(tried)
        if other is None or not self.rules.same_rules(tunnel, other):
            return None
        if body and (len(body) > other.conn.new_stream_window or len(body) > other.room):
            return None
        if not self.slots.take(other, ip):
            return None
        try:
            raw = self._fields(scope, host, ip)
            remote = self.rules.client_ip(scope)
            stream_id = self._open(other, scope["method"], target(scope), scope["http_version"], raw, remote, has_body, decision)
        except (ProtocolError, ValueError):
            self.slots.give_back(other, ip)
            return None
        if has_body:
            assert body is not None
            other.conn.send_data(stream_id, body, end_stream=True)
        pool.took(other)
        stream = RelayStream(stream_id)
        other.open(stream)
        other.flush()
        # Rate-limited, the path cut: a public client causes one per request while an agent refuses.
        self.peer_errors.log(
            "pool-failover", logging.INFO, "tunnel %s: %s %s refused by agent %s (%s); sent to agent %s", tunnel.name,
            scope["method"], clipped(scope["path"], 200), tunnel.peer, clipped(failure.reason or "refused", 200), other.peer,
        )
        return other, stream

    def _answer_direct(
        self, tunnel: AgentLink, client: HeadLimitedHttpProtocol, cycle: DirectCycle, host: bytes, decision: Decision
    ) -> None:
        """Answer as a rule says, from the callback (or after its ``delay``, from a timer)."""
        answer = decision.answer
        assert answer is not None
        scope: Scope = cycle.scope
        body = bytes(cycle.body)
        cycle.body = bytearray()
        cycle.flow.resume_reading()
        self.rules.notify(tunnel, scope, self._fields(scope, host, client_ip(scope)), decision, body)

        def respond() -> None:
            if cycle.disconnected or client.transport.is_closing():
                return
            if answer.drop:
                client.abort()
                return
            if cycle.flow.write_paused:  # a response before it on the connection is still going
                client.abort()
                return
            write_messages(cycle, answer_messages(answer, request_host(cycle.headers)))

        if answer.delay > 0:
            client.loop.call_later(answer.delay, respond)
        else:
            respond()

    def _record_answer(
        self, tunnel: AgentLink, scope: Scope, send: Send, host: bytes, decision: Decision, length: int, chunked: bool
    ) -> None:
        """Tell the agent of a request a rule answered here, once answered (``RuleBook.notify``),
        with its body: what came before the answer, and the rest that the connection reads, to
        stay usable, after an answer that came before the body (``HeadLimitedHttpProtocol.tap_body``,
        within the bounds of that reading): the notice goes once it stops. Nothing waits for it.
        A body not read to its end (a client that stopped or went away, one chunked while the
        connection closes) or longer than the notice carries is said to be cut, with its
        Content-Length, or what was read of a chunked one."""
        rules = self.rules
        if not rules.notices(tunnel, decision):
            return
        fields = self._fields(scope, host, client_ip(scope))
        if not chunked and length <= 0:
            rules.notify(tunnel, scope, fields, decision)
            return
        cycle = getattr(send, "__self__", None)  # uvicorn's cycle: the body that came, unread
        came = bytes(getattr(cycle, "body", b""))
        if cycle is not None and not getattr(cycle, "more_body", True):
            rules.notify(tunnel, scope, fields, decision, came)
            return

        def done(kept: bytes, read: int, ended: bool) -> None:
            total = len(came) + read
            cut = None if ended and len(kept) == read else (length if length >= 0 else total)
            rules.notify(tunnel, scope, fields, decision, came + kept, cut=cut)

        keep = max(0, NOTICE_BODY - len(came))
        tap = BodyTap(keep, length - len(came) if length >= 0 else -1, done)
        client: HeadLimitedHttpProtocol | None = (scope.get("extensions") or {}).get(CONNECTION_EXTENSION)
        if cycle is None or client is None or not client.tap_body(tap):
            tap.finish(False)  # no more of it is read: what came is what there is

    async def __call__(self, tunnel: AgentLink, scope: Scope, receive: Receive, send: Send, host: bytes) -> None:
        """Forward one request to ``tunnel`` and stream its response back."""
        problem = request_problem(scope)
        if problem is not None:
            await send_plain(send, 400, answer_text(f"{problem}\n"), close=True)
            return
        length, chunked = _body_length(scope["headers"])
        if self.max_body and length > self.max_body:
            text = f"request body of {length} bytes is larger than the relay's limit of {format_size(self.max_body)}\n"
            await send_plain(send, 413, text, close=True)
            return
        decision = self.rules.judge(tunnel, scope)
        if decision is not None and decision.answer is not None:
            try:
                await send_answer(decision, scope, send)
            finally:
                self._record_answer(tunnel, scope, send, host, decision, length, chunked)
            return
        if tunnel.draining or tunnel.closed:
            await send_plain(send, 503, f"tunnel {tunnel.name} is restarting; try again\n")
            return
        has_body = chunked or length > 0
        ip = client_ip(scope)
        if not self.slots.take(tunnel, ip):
            text = over_share(tunnel, ip, self.slots, self.peer_errors)
            for message in plain(429, text, close=True, extra=[RETRY_AFTER_HEADER]):
                await send(message)
            return
        refused: ProtocolError | ValueError | None = None
        try:
            raw = self._fields(scope, host, ip)
            remote = self.rules.client_ip(scope)
            stream_id = self._open(tunnel, scope["method"], target(scope), scope["http_version"], raw, remote, has_body, decision)
        except (ProtocolError, ValueError) as exc:
            self.slots.give_back(tunnel, ip)
            refused = exc
        # Answered outside the handler: nothing awaits while an exception is being handled
        # (devtunnel/native.py says why).
        if refused is not None:
            await _refuse_open(send, tunnel, refused)
            return
        stream = RelayStream(stream_id)
        tried: list[AgentLink] = []
        body: bytes | None = None
        while True:
            try:
                resent = await self._forward(tunnel, stream, scope, receive, send, has_body, ip, host, decision, tried, body)
            finally:
                self.slots.give_back(tunnel, ip)
            if resent is None:
                return
            tunnel, stream, body = resent  # (its slot taken by resend)

    async def _forward(
        self,
        tunnel: AgentLink,
        stream: RelayStream,
        scope: Scope,
        receive: Receive,
        send: Send,
        has_body: bool,
        ip: str,
        host: bytes,
        decision: Decision | None,
        tried: list[AgentLink],
        body: bytes | None,
    ) -> tuple[AgentLink, RelayStream, bytes | None] | None:
        """Stream the request and its response. When ``tunnel`` refused the request and it
        could be sent again (``resend``): the member and stream it went to, and its body.

        ``tried``: the members that refused it so far; when there are any, ``resend`` sent the
        request (with ``body``, its whole body) on ``stream`` already.
        """
        if not tried:
            tunnel.open(stream)
            tunnel.flush()
        client: HeadLimitedHttpProtocol | None = (scope.get("extensions") or {}).get(CONNECTION_EXTENSION)
        if client is not None:
            client.lost_callback = stream.on_client_gone
            stream.client = client
        uploader = None
        if has_body and not tried:
            uploader = asyncio.get_running_loop().create_task(self._upload(tunnel, stream, receive, ip))
        responded = False
        request_sent = True
        try:
            responded = await self._respond(tunnel, stream, scope, send, client, decision)
        finally:
            if client is not None:
                client.lost_callback = None
            if uploader is not None:
                if not uploader.done():
                    uploader.cancel()
                    request_sent = False
                elif uploader.cancelled() or uploader.exception() is not None:
                    request_sent = False
                else:
                    request_sent, body = uploader.result()
            tunnel.forget(stream, complete=responded and request_sent)
        failure = stream.failure
        if stream.head is not None or failure is None or stream.client_gone:
            return None
        if request_sent:
            resent = self.resend(tunnel, failure, scope, host, ip, decision, body, tried)
            if resent is not None:
                return (*resent, body)
        await self._answer_failure(tunnel, failure, send)
        return None

    async def _upload(
        self, tunnel: AgentLink, stream: RelayStream, receive: Receive, ip: str
    ) -> tuple[bool, bytes | None]:
        """Send the request body within the send window: (True once all of it was sent, and
        the whole body when it was kept: at most ``KEPT_BODY`` bytes to a pool member).

        Only the time spent waiting for the client counts towards ``body_timeout``, and towards
        the bound of ``body_min_rate``: while the agent's window is full the client is not
        asked for more.
        """
        conn = tunnel.conn
        stream_id = stream.id
        total = 0
        kept: bytearray | None = bytearray() if tunnel.pooled else None
        rate = self.body_min_rate
        loop = asyncio.get_running_loop()
        waited = 0.0  # seconds spent waiting for the client
        try:
            while True:
                wait = self.body_timeout
                slow = False
                if rate:
                    allowed = self.body_timeout + total / rate - waited
                    if allowed < wait:
                        wait, slow = max(0.0, allowed), True
                started = loop.time()
                try:
                    async with asyncio.timeout(wait):
                        message = await receive()
                except TimeoutError:
                    if slow:
                        self._too_slow(tunnel, stream, ip, total, waited + loop.time() - started)
                    else:
                        self._stalled(tunnel, stream, ip, total)
                    return False, None
                waited += loop.time() - started
                if message["type"] != "http.request":
                    stream.on_client_gone()
                    return False, None
                body: bytes = message.get("body", b"")
                more = message.get("more_body", False)
                total += len(body)
                if kept is not None:
                    if total <= KEPT_BODY:
                        kept += body
                    else:
                        kept = None
                if self.max_body and total > self.max_body:
                    reason = f"request body is larger than the relay's limit of {format_size(self.max_body)}"
                    conn.reset_stream(stream_id, ErrorCode.TOO_LARGE, reason)
                    tunnel.flush()
                    stream.fail(StreamReset(stream_id, int(ErrorCode.TOO_LARGE), reason))
                    return False, None
                while True:
                    if stream.failure is not None or stream.client_gone or tunnel.closed:
                        return False, None
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
                    return True, bytes(kept) if kept is not None else None
        except DevtunnelError as exc:  # the stream was closed under us (reset, tunnel gone)
            log.debug("tunnel %s: upload on stream %d stopped: %s", tunnel.name, stream_id, exc)
            return False, None
        except Exception:
            # A fault of ours: the response side waits on the stream, not on this task, so the
            # stream fails here (the client gets 502, the agent a reset) and the error is logged,
            # instead of the request hanging with the exception unread in this task.
            log.exception("tunnel %s: upload on stream %d failed", tunnel.name, stream_id)
            stream.fail(StreamReset(stream_id, int(ErrorCode.CANCEL), "the relay failed to forward the request body"))
            return False, None

    def _stalled(self, tunnel: AgentLink, stream: RelayStream, ip: str, received: int) -> None:
        """Give up on a request body that stopped arriving: reset the stream towards the agent
        (the local service sees an aborted request) and fail it here (the client gets 408, or
        a closed connection once its response has started)."""
        reason = f"the client sent no request body for {self.body_timeout:g} s (after {received} bytes)"
        self.peer_errors.log(
            "body-stalled", logging.WARNING, "tunnel %s: request body from %s stalled after %d bytes; dropped",
            tunnel.name, ip, received,
        )
        self._drop_body(tunnel, stream, reason)

    def _too_slow(self, tunnel: AgentLink, stream: RelayStream, ip: str, received: int, waited: float) -> None:
        """Give up on a request body arriving slower than ``body_min_rate`` on average, as on
        one that stopped (``_stalled``)."""
        reason = (f"the client sent the request body too slowly: {received} bytes in {waited:.0f} s, less than "
                  f"{self.body_min_rate} bytes a second after the first {self.body_timeout:g} s")
        self.peer_errors.log(
            "body-slow", logging.WARNING,
            "tunnel %s: request body from %s too slow (%d bytes in %.0f s, under %d bytes a second); dropped",
            tunnel.name, ip, received, waited, self.body_min_rate,
        )
        self._drop_body(tunnel, stream, reason)

    def _drop_body(self, tunnel: AgentLink, stream: RelayStream, reason: str) -> None:
        # CLIENT_TIMEOUT, not CANCEL: the agent records a timeout (``client_timeout``), not a
        # client that went away; an agent that does not know the code takes it as CANCEL.
        if not tunnel.closed and stream.failure is None:
            tunnel.conn.reset_stream(stream.id, ErrorCode.CLIENT_TIMEOUT, reason)
            tunnel.flush()
        stream.fail(BodyStalled(stream.id, int(ErrorCode.CLIENT_TIMEOUT), reason))

    async def _respond(
        self,
        tunnel: AgentLink,
        stream: RelayStream,
        scope: Scope,
        send: Send,
        client: HeadLimitedHttpProtocol | None,
        decision: Decision | None = None,
    ) -> bool:
        """Write the response to the client; True when it completed. A stream that failed
        before its response started is answered by the caller (``_forward``)."""
        while stream.head is None:
            if stream.client_gone or stream.failure is not None:
                return False
            await stream.wait()
        start = response_start(stream, request_host(scope["headers"]), decision)
        if start is None:
            await send_plain(send, 502, invalid_response(tunnel, stream))
            return False
        conn = tunnel.conn
        chunks = stream.chunks
        cycle = getattr(send, "__self__", None)  # uvicorn's cycle: its send is a bound method of it
        if cycle is not None:
            # uvicorn writes the head at once: what it would let through is refused first, as
            # the direct path refuses it (a name that is not a token: values.http1.fields_problem;
            # a body that came whole and does not fit the head: body_mismatch).
            refused = fields_problem(start["headers"]) is not None
            longer = body_mismatch(scope["method"], start["status"], start["headers"], chunks) if stream.ended else None
            if longer is not None and not refused:
                for message in body_refused(cycle, self.peer_errors, tunnel, scope, start["status"], longer):
                    await send(message)
                return False
            if not refused:
                try:
                    await send(start)
                except RuntimeError:  # a header uvicorn's rule refuses, before a byte of the head is written
                    refused = True
            if refused:
                for message in head_refused(cycle, self.peer_errors, tunnel, scope, start["headers"]):
                    await send(message)
                return False
        try:
            if cycle is None:
                await send(start)
            if start["status"] == 304 and cycle is not None:
                not_modified(cycle)
            while True:
                if chunks:
                    data = chunks.popleft()
                    tunnel.taken(stream, len(data))
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
            log_invalid(self.peer_errors, tunnel, scope, exc)
            if client is not None:
                client.abort()
            return False

    async def _answer_failure(self, tunnel: AgentLink, failure: StreamReset, send: Send) -> None:
        for message in failure_answer(tunnel, failure):
            await send(message)


async def _refuse_open(send: Send, tunnel: AgentLink, exc: ProtocolError | ValueError) -> None:
    """Answer a request the tunnel connection would not open a stream for."""
    code = getattr(exc, "code", None)
    if code == ErrorCode.REFUSED_STREAM:
        await send_plain(send, 503, f"tunnel {tunnel.name} is busy: {exc}; try again\n")
    elif code == ErrorCode.TOO_LARGE or isinstance(exc, ValueError):
        await send_plain(send, 431, f"request head too large for the tunnel: {exc}\n", close=True)
    else:
        await send_plain(send, 502, f"tunnel {tunnel.name} cannot take requests: {exc}\n")
