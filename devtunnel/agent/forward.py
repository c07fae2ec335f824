"""Forward one tunnel stream to the local HTTP service: the agent's hot path.

Requests are written by us: the request line and the headers exactly as the public client sent
them (raw bytes, in order), then the body as it arrives from the relay, chunked when it has no
Content-Length. Responses are read with ``httptools`` (``local_response.py``); their head and
body go back through the stream as they come, within the relay's flow-control window. Local
connections come from a keep-alive pool (``local_pool.py``).

``Forwarder.start`` writes the request head from the callback that received the request; a
request without a body may then be answered from the local connection's callbacks
(``quick.py``), else ``Forwarder.handle`` carries on in the stream's task.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from dataclasses import replace
from http import HTTPStatus

from devtunnel.capture.model import ErrorKind
from devtunnel.errors import ProtocolError, StreamClosedError
from devtunnel.agent.hold import APP_RESTARTING, APP_STOPPED, NOT_LISTENING, HoldExpired, HoldGate
from devtunnel.agent.children import port_accepts
from devtunnel.agent.lease import UNSENT_BODY_WAIT, BodyCopy, Lease, whole_body
from devtunnel.agent.local_pool import DEFAULT_CONNECT_TIMEOUT, LocalConnection, LocalPool
from devtunnel.agent.local_response import MAX_HEAD, NO_BODY_STATUSES, BadResponse, LocalResponse
from devtunnel.agent.recording import ExchangeCapture
from devtunnel.agent.stream import AgentStream
from devtunnel.values.target import Target
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import DataReceived, Fields, RequestReceived
from devtunnel.values.request_head import answer_text, declared_length, field_is_safe, fields_are_safe

__all__ = ["Forwarder", "Start", "answer_error", "refusal", "DEFAULT_HEAD_TIMEOUT", "ERROR_HEADER", "MAX_HEAD"]

DEFAULT_HEAD_TIMEOUT = 60.0
"""Seconds the local service has to send a response head once the request is sent."""
# MAX_HEAD (local_response): bytes the local service may send before its final response head
# ends, interim (1xx) responses included; past them it gets 502. A relay takes no larger RESPONSE
# head (256 KiB), and ``httptools`` sets no bound of its own: a head that never ended grew the
# agent's memory until the head timeout. (A ``QuickAnswer`` hands an unfinished head to the task
# long before.) A whole head is measured as the wire encodes it (LocalResponse).
ERROR_HEADER = b"X-Devtunnel-Error"
"""Header naming the failure on responses the agent makes up itself (502, 504)."""

_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
"""Methods a request may be sent again with once the app closed it unanswered (RFC 9110 9.2.2)."""


async def ipv6_loopback_hint(target: Target) -> str:
    """For a target on 127.0.0.1 (a bare port) or ``localhost`` that refused: a line naming
    ``[::1]:PORT`` when something listens there instead, else "".

    A dev server that takes ``localhost`` as ``::1`` (Node 17 and later, Vite) listens on IPv6
    loopback only; curl and browsers reach it by ``localhost``, so without this line the user
    looks for a service that is not running when it runs one address away."""
    if target.host not in ("127.0.0.1", "localhost") or not await port_accepts("::1", target.port, timeout=0.2):
        return ""
    return (f"A service listens on [::1]:{target.port} (IPv6 loopback, where Node and Vite may put"
            f" localhost): start devtunnel http {target.scheme}://[::1]:{target.port}, or have it listen"
            " on 127.0.0.1.\n")

HTTPS_PROBE_EVERY = 5.0
"""Seconds a target's answer to the HTTPS probe is reused: a plain service resetting requests
under a burst is probed once, not once a request."""
_https_probes: dict[tuple[str, int], tuple[float, bool]] = {}


async def https_hint(target: Target) -> str:
    """For an ``http://`` target that broke the connection or answered something that is not
    HTTP: a line saying it speaks HTTPS when it answers a TLS ClientHello with a handshake
    record, else "".

    A dev server started with a certificate (``--ssl-keyfile``, ``next dev --experimental-https``,
    Vite's basic-ssl) resets a plain HTTP request or answers it with a TLS alert; without this
    line the 502 reads "connection reset by peer" about a service that works. The hello is made
    by ``ssl`` in memory and sent on a plain connection: the event loop's TLS (uvloop's) would
    leave a failed handshake's exception in a future nobody reads, a traceback in the log."""
    if target.tls:
        return ""
    key = (target.host, target.port)
    loop = asyncio.get_running_loop()
    probed = _https_probes.get(key)
    if probed is not None and loop.time() - probed[0] < HTTPS_PROBE_EVERY:
        speaks = probed[1]
    else:
        speaks = await _answers_tls(target.host, target.port)
        if len(_https_probes) >= 64:
            _https_probes.clear()
        _https_probes[key] = (loop.time(), speaks)
    if not speaks:
        return ""
    https = replace(target, scheme="https")
    return (f"The service at {target.host if ':' not in target.host else f'[{target.host}]'}:{target.port} speaks"
            f" HTTPS: start devtunnel http {https.url} (with --insecure for a self-signed certificate).\n")


class _FirstBytes(asyncio.Protocol):
    """Sends ``hello`` on connecting and keeps the first bytes answered (b"" when the peer closes
    or resets first). A plain protocol: asyncio's streams keep a connection lost with an error in
    a future of their own, logged as "never retrieved" when nothing reads it."""

    def __init__(self, hello: bytes, answer: asyncio.Future[bytes]) -> None:
        self.hello = hello
        self.answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.hello)  # type: ignore[attr-defined]  # a stream transport (uvloop's is no asyncio.Transport)

    def data_received(self, data: bytes) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_result(b"")


async def _answers_tls(host: str, port: int) -> bool:
    """Whether ``host:port`` answers a TLS ClientHello with a TLS handshake record (ServerHello)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()
    first = b""
    try:
        async with asyncio.timeout(0.5):
            transport, _ = await loop.create_connection(lambda: _FirstBytes(hello, answer), host, port)
            try:
                first = await answer
            finally:
                transport.abort()
    except (OSError, TimeoutError):
        return False
    return len(first) >= 3 and first[0] == 0x16 and first[1] == 0x03


class _ClosedEarly(Exception):
    """The local service closed (or reset) the connection before a whole response head."""

    def __init__(self, message: str, *, nothing_received: bool, reset: bool = False) -> None:
        super().__init__(message)
        self.nothing_received = nothing_received
        self.reset = reset
        """The connection was reset: the local service closed it with bytes of the request unread."""


class _HeadTimeout(Exception):
    """The local service took longer than the head timeout to answer."""


class _BodyMismatch(Exception):
    """The relay sent a body longer or shorter than the request's Content-Length.

    The body goes to the local service as it comes, within that length: bytes past it would be
    read as another request (one the agent never checked), and a body that ends short would
    take the next request's bytes on a kept-alive connection. The connection is closed."""


def _raise_body_mismatch(body_task: asyncio.Task[float] | None) -> None:
    """Raise the ``_BodyMismatch`` the body task ended with, if it did (it closed the connection)."""
    if body_task is not None and body_task.done() and not body_task.cancelled():
        exc = body_task.exception()
        if isinstance(exc, _BodyMismatch):
            raise exc


class Start:
    """What ``Forwarder.start`` (and a ``QuickAnswer``) did before the stream's task ran."""

    __slots__ = ("request_head", "chunked", "length", "conn", "sent_at", "response", "pending")

    def __init__(self, request_head: bytes, chunked: bool, conn: LocalConnection | None, length: int = -1) -> None:
        self.request_head = request_head
        self.chunked = chunked
        self.length = length
        """The body length the request declares (Content-Length), -1 without one."""
        self.conn = conn
        """A kept-alive connection the request head was written to, or None (connect first)."""
        self.sent_at: float | None = None
        self.response: LocalResponse | None = None
        """A response whose head was sent on already: the task carries on with its body."""
        self.pending = b""
        """Body bytes of ``response`` parsed but not sent yet."""


def _only_host_special(names: tuple[bytes, ...]) -> bool:
    """Whether exactly one of ``names`` is ``Host`` and none is one of the others
    ``Forwarder.request_head`` may drop or rewrite (``Expect``, ``Transfer-Encoding``), in any case."""
    hosts = 0
    for name in names:
        lower = name.lower()
        if lower == b"host":
            hosts += 1
        elif lower == b"expect" or lower == b"transfer-encoding":
            return False
    return hosts == 1


class Forwarder:
    """Forwards the HTTP streams of one tunnel to its local service.

    Args:
        tunnel: the tunnel's name (for error pages and records).
        target: the local service.
        host_header: ``"preserve"`` sends the public Host, ``"rewrite"`` the target's.
        insecure: do not verify an https target's certificate.
        head_timeout: seconds the local service has to answer once the request is sent.
    """

    def __init__(
        self,
        tunnel: str,
        target: Target,
        *,
        host_header: str = "preserve",
        insecure: bool = False,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.tunnel = tunnel
        self.target = target
        self.target_url = target.url
        """``target.url``, made once: every capture records it."""
        self._base_path = bool(target.base_path)
        """The target has a base path (``request_target`` puts it before a request's path):
        without one, a request's target is sent as it came, without the call."""
        self.rewrite_host = host_header == "rewrite"
        self.head_timeout = head_timeout
        self.pool = LocalPool(target, insecure=insecure, connect_timeout=connect_timeout)
        self.gate: HoldGate | None = None
        """Set for a tunnel whose app devtunnel runs or that holds requests (``hold.py``)."""

    def close(self) -> None:
        """Close idle local connections."""
        self.pool.close()
        if self.gate is not None:
            self.gate.close()

    # -- the request head we write ---------------------------------------------------------
    def request_head(self, head: RequestReceived, *, chunked: bool) -> bytes:
        """Serialise the request head for the local service (always HTTP/1.1)."""
        out = [head.method, b" ", self.target.request_target(head.target) if self._base_path else head.target,
               b" HTTP/1.1\r\n"]
        headers = head.headers
        if headers and not self.rewrite_host:
            # The usual head: one Host, nothing to drop, every field safe. Checked and written
            # for all fields at once; anything else goes through the loop below.
            names, values = zip(*headers)
            if _only_host_special(names) and fields_are_safe(names, values):
                out += (b"\r\n".join(map(b": ".join, headers)),
                        b"\r\nTransfer-Encoding: chunked\r\n\r\n" if chunked else b"\r\n\r\n")
                return b"".join(out)
        host = self.target.authority.encode("ascii")
        saw_host = False
        for name, value in headers:
            lower = name.lower()
            if lower == b"host":
                saw_host = True
                if self.rewrite_host:
                    value = host
            elif lower == b"expect" and value.lower() == b"100-continue":
                continue  # the relay answered it already
            elif lower == b"transfer-encoding":
                continue  # we frame the body ourselves
            if not field_is_safe(name, value):
                continue  # never let a header smuggle another line into the request
            out += (name, b": ", value, b"\r\n")
        if not saw_host:
            out += (b"Host: ", host, b"\r\n")
        if chunked:
            out.append(b"Transfer-Encoding: chunked\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    # -- one stream --------------------------------------------------------------------------
    def start(self, head: RequestReceived) -> Start:
        """Begin forwarding at once, from the callback that received the request.

        On a kept-alive local connection the request head is written here, without waiting
        for the stream's task to be scheduled; ``handle`` carries on from there.
        """
        # A request that ended with its head has no body to hold to a length (head_problem
        # refused one declaring a body): its fields are not read again.
        length = -1 if head.end_stream else declared_length(head.headers)
        chunked = not head.end_stream and length < 0
        start = Start(self.request_head(head, chunked=chunked), chunked, self.pool.take(), length)
        if start.conn is not None:
            start.conn.write(start.request_head)
            start.sent_at = start.conn.loop.time()
        return start

    async def handle(
        self, stream: AgentStream, head: RequestReceived, cap: ExchangeCapture, start: Start | None = None
    ) -> None:
        """Forward one request and its response; every outcome is recorded in ``cap``."""
        try:
            await self._forward(stream, head, cap, start or self.start(head))
        except asyncio.CancelledError:
            cap.fail(*stream.cut("before the response ended"))
            raise
        except StreamClosedError as exc:
            cap.fail("client_gone", str(exc))

    async def _forward(self, stream: AgentStream, head: RequestReceived, cap: ExchangeCapture, start: Start) -> None:
        if start.response is not None:
            # A QuickAnswer sent the head on and read this far: carry on with the body.
            lease = Lease(self.pool, start.conn)
            start.conn = None
            try:
                await self._relay_body(stream, lease, start.response, cap, start.pending)
            finally:
                lease.release(False)
            return
        chunked, request_head = start.chunked, start.request_head
        head_only = head.method == b"HEAD"
        lease = Lease(self.pool, start.conn)
        start.conn = None  # the lease has it now
        # A pooled connection may have been closed by the local service a moment ago; a request
        # without a body is then safely sent again on a new connection, and so is one with a
        # small body if the service reset the connection: it closed it with the request unread.
        retry_allowed = lease.conn is not None
        gate = self.gate
        may_resend = retry_allowed or (gate is not None and gate.managed and gate.hold > 0)
        copy = BodyCopy() if may_resend and not head.end_stream else None
        resend: bytes | None = None
        """The whole request body (framed) to send again, from ``copy``."""
        held_again = False
        dropped_at = 0.0
        """When the app first dropped the request (``loop.time()``): it may be held no more after ``gate.hold``."""
        turn_at = 0.0
        """Held again, the request's place among those held again (``HoldGate.connect``'s ``again``):
        ``dropped_at``, or first of all once a run dropped it when it was not the first sent there."""
        first = False
        """Held again, the request was the first sent to the run it was last sent to."""
        sent_to = dropped_by = gate.starts if gate is not None else 0
        """The run of the app (``HoldGate.starts``) the request was last sent to, and the one that dropped it first."""
        sent_at = start.sent_at
        try:
            while True:
                if lease.conn is None:
                    lease.conn = await self._connect(stream, head, cap, body_read=resend is not None,
                                                     again=turn_at if held_again else None)
                    if lease.conn is None:
                        return
                    if held_again and gate is not None:
                        first = gate.sent_in_run == 1  # (sent alone: no other connection since)
                    sent_at = None
                conn = lease.conn
                if sent_at is None:
                    conn.write(request_head)
                    if resend is not None:
                        conn.write(resend)
                    sent_at = conn.loop.time()
                    if gate is not None:
                        sent_to = gate.starts
                if not head.end_stream and resend is None:
                    lease.body_task = asyncio.create_task(self._send_body(stream, conn, chunked, cap, copy, start.length))
                response = LocalResponse(head_only)
                try:
                    await self._read_head(conn, response, lease.body_task, sent_at, cap)
                except (_ClosedEarly, BadResponse, _HeadTimeout, _BodyMismatch) as exc:
                    failed = exc
                else:
                    if gate is not None:
                        gate.answered(conn)  # the app took it: the next held request's turn
                    break
                if gate is not None:
                    gate.answered(conn)
                # Answered outside the handler: nothing awaits while an exception is being
                # handled (devtunnel/native.py says why).
                if isinstance(failed, _BodyMismatch):
                    await self._fail_before_head(stream, head, cap, 400, "bad_request",
                                                 f"devtunnel refused to forward this request: {failed}\n")
                    return
                if isinstance(failed, _HeadTimeout):
                    message = f"the local service at {self.target.url} did not answer within {self.head_timeout:g} s"
                    await self._fail_before_head(stream, head, cap, 504, "local_timeout", message)
                    return
                if isinstance(failed, BadResponse):
                    message = f"{failed}\n" + await https_hint(self.target)
                    await self._fail_before_head(stream, head, cap, 502, "local_error", message)
                    return
                if failed.nothing_received and copy is not None and resend is None:
                    resend = await whole_body(lease, copy)
                if retry_allowed and failed.nothing_received and (head.end_stream or (failed.reset and resend is not None)):
                    retry_allowed = False
                    lease.release(False)
                    sent_at = None
                    continue
                gate = self.gate
                if gate is not None and gate.managed and failed.nothing_received:
                    # The app accepted and went down (it crashed, or a reload ended it): the
                    # request waits for it once more, if the tunnel holds (with a body only
                    # when it was small enough to be kept whole). And again, while the hold
                    # lasts, after each reset: the request was not read (a dying app's
                    # listening socket resets the connections queued on it, and its
                    # supervisor may not know yet), so it waits as after a refusal. An
                    # idempotent request (RFC 9110 9.2.2: sent twice, it does what it does
                    # once) waits again after a plain close too: an app slow to die accepts
                    # and reads it, and closes it unanswered as it exits, before its
                    # supervisor knows; a probe spaces the attempts.
                    # The first drop is no strike: other requests may have been in the app with
                    # this one, and any of them brought it down. Held again, the request is
                    # sent alone (the gate's ``again``); a later run that drops it when it was
                    # the first request that run got went down with it alone. One that had
                    # answered others before may have been ending after them (an app exiting
                    # on a count, a reloader): the request goes first to the next run.
                    if held_again and sent_to != dropped_by and first:
                        # Sent alone and first to an app started after the one that dropped
                        # it, and dropped by that one too: this request is what brings the app
                        # down, and a third try would only crash it again.
                        await self._fail_before_head(
                            stream, head, cap, 502, "app_restarting",
                            f"{APP_RESTARTING}: {failed}; the app went down with this request in it"
                            " twice, after a restart too: not sent a third time (it may be what"
                            " brings the app down; see its log)")
                        return
                    if not held_again:
                        dropped_by = sent_to
                    elif sent_to != dropped_by:
                        turn_at = -math.inf  # first to the next run, where it is counted
                    again = held_again
                    if gate.hold and (head.end_stream or resend is not None) and (
                        not held_again
                        or ((failed.reset or head.method in _IDEMPOTENT) and conn.loop.time() < dropped_at + gate.hold)
                    ):
                        if not held_again:
                            held_again = True
                            dropped_at = turn_at = conn.loop.time()
                        if failed.reset or again:
                            gate.refused(self.pool.connect)
                        lease.release(False)
                        sent_at = None
                        continue
                    if gate.stopped:  # (it exited with status 0 with this request in it)
                        await self._fail_before_head(stream, head, cap, 502, "app_stopped", f"{APP_STOPPED}: {failed}")
                    else:
                        await self._fail_before_head(stream, head, cap, 502, "app_restarting",
                                                     f"{APP_RESTARTING}: {failed}")
                    return
                message = f"{failed}\n" + (await https_hint(self.target) if failed.nothing_received else "")
                await self._fail_before_head(stream, head, cap, 502, "local_error", message)
                return
            await self._relay_response(stream, head_only, lease, response, cap)
            if lease.body_cut:
                # The local service answered before reading the whole request body: tell the
                # relay to stop sending it (the connection was not reused). The record says
                # the body is partial: replayed as it stands, it would be another request.
                cap.request_body_cut()
                stream.reset(ErrorCode.NO_ERROR, "response complete")
        finally:
            if gate is not None:
                # Read through _leased: here mypy still takes lease.conn for the connection the loop
                # above narrowed it to, and compiled code would check that type on a None.
                leased = _leased(lease)
                if leased is not None:
                    gate.answered(leased)  # cancelled before its answer (the client went away)
            lease.release(False)

    async def _connect(
        self, stream: AgentStream, head: RequestReceived, cap: ExchangeCapture, *, body_read: bool = False,
        again: float | None = None,
    ) -> LocalConnection | None:
        """A new local connection, or None after answering the failure to the client
        (``body_read``: the whole request body was read from the relay already; ``again``: a
        request the app went down with, held again, as ``HoldGate.connect`` takes it)."""
        if body_read:
            head = replace(head, end_stream=True)  # no more body to read and record
        gate = self.gate
        try:
            if gate is None:
                return await self.pool.connect()
            conn = await gate.connect(self.pool.connect, cap, until_answered=True, again=again)
            if again is not None:
                # Alone in the app: a request that finds a kept-alive connection idle would go
                # beside it, past the gate, and a crash could not be told whose.
                self.pool.close()
            return conn
        except (HoldExpired, OSError) as exc:  # OSError: refused, reset, timed out, unreachable, TLS
            failed = exc
        # Answered outside the handler: nothing awaits while an exception is being handled
        # (devtunnel/native.py says why).
        retry_after = None
        public: str | None = None
        kind: ErrorKind
        if isinstance(failed, HoldExpired):
            status, kind, message, public = 503, "app_restarting", f"{failed}\n", f"{failed.public}\n"
            retry_after = gate.retry_after if gate is not None else None
        elif isinstance(failed, NOT_LISTENING):  # refused, or reset in a dying app's queue
            status = 502
            kind, message, public = await refusal(self.tunnel, self.target, gate)
        elif isinstance(failed, TimeoutError):
            status, kind = 504, "local_timeout"
            message = f"the local service at {self.target.url} did not accept a connection in time"
        else:  # unreachable host, unknown name, TLS handshake failure
            status, kind = 502, "local_error"
            message = f"cannot connect to the local service at {self.target.url}: {failed}"
            if isinstance(failed, ssl.SSLCertVerificationError):
                message += (" (start devtunnel with --insecure, or set agent.insecure, to accept a self-signed"
                            " certificate)")
        await self._record_unsent_body(stream, head, cap)
        await self._fail_before_head(stream, head, cap, status, kind, message, retry_after=retry_after, public=public)
        return None

    async def _record_unsent_body(self, stream: AgentStream, head: RequestReceived, cap: ExchangeCapture) -> None:
        """Record the request body that could not be delivered (up to the cap, for a bounded time).

        A webhook that arrived while the local service was down is the one worth replaying
        later, so its body is kept even though nothing received it.
        """
        if head.end_stream:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UNSENT_BODY_WAIT
        while not cap.request_body_full:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                event = await asyncio.wait_for(stream.events.get(), remaining)
            except TimeoutError:
                return
            if not isinstance(event, DataReceived):
                return
            if event.data:
                cap.request_body(event.data)
                stream.acknowledge(len(event.data))
            if event.end_stream:
                return

    async def _send_body(
        self, stream: AgentStream, conn: LocalConnection, chunked: bool, cap: ExchangeCapture,
        copy: BodyCopy | None = None, length: int = -1,
    ) -> float:
        """Copy the request body from the relay to the local service; returns when it ended.

        With ``copy``, the body is also kept there, and read whole even if the connection breaks.
        Not ``chunked``, the body must be ``length`` bytes (its Content-Length): one that goes
        past it or ends short aborts the connection and raises ``_BodyMismatch``.

        Raises:
            _BodyMismatch: the relay sent more or fewer bytes than ``length``.
        """
        events = stream.events
        left = length
        while True:
            event = await events.get()
            if not isinstance(event, DataReceived):
                continue
            data = event.data
            if not chunked:
                left -= len(data)
                if left < 0 or (event.end_stream and left):
                    conn.abort()
                    if left < 0:
                        raise _BodyMismatch(f"the relay sent more body than its Content-Length of {length} bytes")
                    raise _BodyMismatch(f"the relay ended the body after {length - left} of the {length} bytes"
                                        " its Content-Length declares")
            if data:
                if copy is not None:
                    parts = (b"%x\r\n" % len(data), data, b"\r\n") if chunked else (data,)
                    copy.add(parts)
                    cap.request_body(data)
                    await copy.send(conn, parts)
                else:
                    if chunked:
                        conn.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
                    else:
                        conn.write(data)
                    cap.request_body(data)
                    await conn.drain()
                # Credit goes back only once the local socket took the bytes: back-pressure.
                stream.acknowledge(len(data))
            if event.end_stream:
                if copy is not None:
                    end = (b"0\r\n\r\n",) if chunked else ()
                    copy.add(end)
                    copy.whole = True
                    await copy.send(conn, end)
                    return asyncio.get_running_loop().time()
                if chunked:
                    conn.write(b"0\r\n\r\n")
                await conn.drain()
                return asyncio.get_running_loop().time()

    async def _read_head(
        self,
        conn: LocalConnection,
        response: LocalResponse,
        body_task: asyncio.Task[float] | None,
        sent_at: float,
        cap: ExchangeCapture,
    ) -> None:
        """Read until the response head is complete.

        The head timeout runs from the moment the whole request was sent, so a slow upload
        from the public client never counts against the local service.
        """
        loop = conn.loop
        received = False
        unfinished = 0  # bytes read while the head was still unfinished
        sent: float | None = sent_at
        if body_task is None:
            try:
                await conn.drain()
            except OSError as exc:
                raise _ClosedEarly(f"the local service broke the connection: {exc}", nothing_received=True) from exc
        else:
            sent = None
        while not response.head_done:
            if sent is None and body_task is not None and body_task.done():
                ok = not body_task.cancelled() and body_task.exception() is None
                sent = body_task.result() if ok else loop.time()
            # While the body is still being uploaded there is no deadline: poll at the timeout.
            remaining = self.head_timeout if sent is None else sent + self.head_timeout - loop.time()
            if remaining <= 0:
                raise _HeadTimeout
            try:
                data = await conn.read(remaining)
            except TimeoutError:
                continue
            except OSError as exc:
                _raise_body_mismatch(body_task)
                raise _ClosedEarly(f"the local service broke the connection: {exc}", nothing_received=not received,
                                   reset=isinstance(exc, ConnectionResetError)) from exc
            if not data:
                _raise_body_mismatch(body_task)
                raise _ClosedEarly(
                    "the local service closed the connection without a response", nothing_received=not received,
                    reset=conn.reset_after_end,
                )
            if not received:
                received = True
                cap.first_byte()
            response.feed(data)
            if not response.head_done:
                unfinished += len(data)
                if unfinished > MAX_HEAD:
                    raise BadResponse(f"the local service sent {unfinished} bytes without ending its response head"
                                      f" (at most {MAX_HEAD >> 10} KiB)")

    async def _relay_response(
        self, stream: AgentStream, head_only: bool, lease: Lease, response: LocalResponse, cap: ExchangeCapture
    ) -> None:
        """Send the response head and body through the stream.

        The local connection goes back to the pool as soon as the response is complete, before
        its last bytes are sent on, so the next request can use it at once.
        """
        headers = tuple(response.headers)
        reason = bytes(response.reason)
        version = response.version.encode("ascii")
        cap.response_head(response.status, reason, headers, response.version, exact=True)
        no_body = head_only or response.status in NO_BODY_STATUSES
        body = response.take_body()
        if no_body or (response.complete and not body):
            if response.stray and lease.conn is not None:
                lease.conn.expect_stray(response.stray)
            lease.release(response.complete and not response.extra and response.keep_alive)
            try:
                stream.send_response(response.status, reason, headers, end_stream=True, http_version=version)
            except ProtocolError as exc:
                head_refused(stream, cap, exc)
            return
        try:
            stream.send_response(response.status, reason, headers, end_stream=False, http_version=version)
        except ProtocolError as exc:
            head_refused(stream, cap, exc)
            return
        await self._relay_body(stream, lease, response, cap, body)

    async def _relay_body(
        self, stream: AgentStream, lease: Lease, response: LocalResponse, cap: ExchangeCapture, body: bytes
    ) -> None:
        """Send the body of a response whose head was sent, starting with ``body`` (parsed, not sent)."""
        assert lease.conn is not None
        conn = lease.conn
        while True:
            if body:
                cap.response_body(body)
            if response.complete:
                lease.release(not response.extra and response.keep_alive)
                await stream.send_data(body, end_stream=True)
                return
            if body:
                await stream.send_data(body)
            try:
                data = await conn.read()
            except OSError as exc:
                self._broken_after_head(stream, cap, f"the local service broke the connection: {exc}")
                return
            try:
                if data:
                    response.feed(data)
                else:
                    response.eof()
            except BadResponse as exc:
                self._broken_after_head(stream, cap, str(exc))
                return
            body = response.take_body()

    def _broken_after_head(self, stream: AgentStream, cap: ExchangeCapture, message: str) -> None:
        cap.fail("local_error", message)
        stream.reset(ErrorCode.LOCAL_ERROR, message)

    async def _fail_before_head(
        self, stream: AgentStream, head: RequestReceived, cap: ExchangeCapture, status: int, kind: ErrorKind, message: str,
        *, retry_after: int | None = None, public: str | None = None,
    ) -> None:
        """Answer the public client ourselves: the local service gave no usable response."""
        await answer_error(stream, cap, status, kind, message, head_only=head.method == b"HEAD", retry_after=retry_after,
                           public=public)
        if not head.end_stream:
            stream.reset(ErrorCode.NO_ERROR, "response complete")


async def refusal(tunnel: str, target: Target, gate: HoldGate | None) -> tuple[ErrorKind, str, str]:
    """The error kind, the reason recorded and the ``502``'s text for a connection ``target``
    refused, a request's or a WebSocket handshake's: the app devtunnel runs restarting, or stopped
    for good (``app_stopped``: it exited with status 0, or could not be started; its state said:
    in full in the record, in devtunnel's words alone to the client), or no service there."""
    if gate is not None and gate.stopped:
        said = f"{APP_STOPPED}: the tunnel {tunnel} is online, but its app at {target.url} is not running"
        return "app_stopped", f"{said} ({gate.app_state}).\n", f"{said} ({gate.app_state_public}).\n"
    if gate is not None and gate.managed:
        state, public = (gate.app_state, gate.app_state_public) if gate.app_down else ("going down", "going down")
        said = f"{gate.down_words}: the tunnel {tunnel} is online, but its app at {target.url} is not ready"
        return "app_restarting", f"{said} ({state}).\n", f"{said} ({public}).\n"
    # The hint is awaited on its own: mypyc (the compiled install) cannot keep the message's
    # temporaries across an await inside the expression ("incref of a spill").
    hint = await ipv6_loopback_hint(target)
    message = (
        f"The tunnel {tunnel} is online, but the local service at {target.url} "
        "refused the connection.\nMake sure a web service is running there, or start "
        "devtunnel with the address it listens on.\n"
    ) + hint
    return "local_refused", message, message


def head_refused(stream: AgentStream, cap: ExchangeCapture, exc: ProtocolError) -> None:
    """A local response's head the relay does not take (``exc`` from ``send_response``): larger
    than the ``max_head_size`` it announced (a RESPONSE frame spends 6 bytes a field where
    HTTP/1.1 spends 4, so a head of many short fields grows past 256 KiB on its way). The stream
    is reset, its client gets 502 with the reason, and the record says it; nothing was sent.

    Raises:
        ProtocolError: ``exc`` again when it is another failure (a defect: the caller logs it).
    """
    if exc.code != ErrorCode.TOO_LARGE:
        raise exc
    message = f"the local service's response head is larger than the relay takes ({exc})"
    cap.fail("local_error", message)
    stream.reset(ErrorCode.LOCAL_ERROR, message)


async def answer_error(
    stream: AgentStream, cap: ExchangeCapture, status: int, kind: ErrorKind, message: str, *, head_only: bool = False,
    retry_after: int | None = None, public: str | None = None,
) -> None:
    """Send (and record) the agent's own plain-text answer (400, 502, 503, 504), with ``X-Devtunnel-Error: KIND``
    (and ``Retry-After`` when given).

    ``message`` is kept as it is in the record (its outputs escape it) and escaped once in the
    body, which a client's terminal shows as it is; ``public``, when given, is the body's text
    instead (the reason without what the app wrote: ``refusal``, ``HoldExpired.public``)."""
    cap.fail(kind, message.strip())
    body = answer_text(message if public is None else public).encode("utf-8")
    reason = HTTPStatus(status).phrase.encode("ascii")
    headers: Fields = (
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"X-Content-Type-Options", b"nosniff"),  # the text quotes what the local service sent
        (b"Content-Length", str(len(body)).encode("ascii")),
        (ERROR_HEADER, kind.encode("ascii")),
    )
    if retry_after is not None:
        headers += ((b"Retry-After", str(retry_after).encode("ascii")),)
    cap.response_head(status, reason, headers)
    if head_only:
        stream.send_response(status, reason, headers, end_stream=True)
        return
    cap.response_body(body)
    stream.send_response(status, reason, headers, end_stream=False)
    await stream.send_data(body, end_stream=True)


def _leased(lease: Lease) -> LocalConnection | None:
    """``lease.conn`` as its declared type, whatever a caller's narrowing says (None once released)."""
    return lease.conn
