"""One WebSocket connection of a tunnel to its relay, from HELLO to close.

The session owns the sans-IO ``Connection``: it feeds it each message from the relay inside
the socket's callback (``socket.py``), hands each stream's events to that stream
(``stream.AgentStream``), and sends everything the streams queued in one turn of the event loop
as a single WebSocket message, from a ``call_soon`` callback. Each public request runs as its
own task (``forward.py`` for HTTP, ``local_ws.py`` for WebSockets), or is answered from the
local connection's callbacks (``quick.py``); a failure costs that stream, never the tunnel.

The session reads and counts what it needs of its tunnel through ``TunnelContext``; what the
relay decided (a rule's mark on a request, a GOAWAY) is read by ``relay_signals.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Protocol

from websockets.exceptions import ConnectionClosedOK

from devtunnel import __version__
from devtunnel.errors import (
    ProtocolError,
    RelayUnreachableError,
    StreamClosedError,
    TunnelError,
)
from devtunnel.agent.socket import TunnelSocket
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.forward import Forwarder, Start, answer_error
from devtunnel.agent.local_ws import forward_websocket
from devtunnel.agent.quick import QuickAnswer
from devtunnel.agent.relay_signals import FINAL_GOAWAYS, check_welcome, goaway_error, goaway_reason, relay_text, rule_of
from devtunnel.capture.model import Exchange, RuleMark
from devtunnel.agent.recording import BodyBudget, ExchangeCapture, LiveSnapshots
from devtunnel.agent.stream import AgentStream
from devtunnel.protocol.agent_side import AgentConnection
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import (
    DataReceived,
    Event,
    GoAway,
    PoolChanged,
    RequestReceived,
    StreamReset,
    WebSocketClosed,
    WebSocketMessageReceived,
    Welcome,
    WindowUpdated,
)
from devtunnel.protocol.handshake import RULE_BODIES, RULES_ACK
from devtunnel.rules import WIRE_VERSION, rules_to_wire
from devtunnel.values.request_head import (
    SCHEMES, USUAL_VERSIONS, field_is_safe, fields_are_safe, head_problem, scheme_problem, version_problem,
)
from devtunnel.values.sizes import format_size

__all__ = ["Session", "TunnelContext", "HANDSHAKE_TIMEOUT", "HELD_REQUESTS", "LEAVE_GRACE"]

log = logging.getLogger("devtunnel.agent")

HANDSHAKE_TIMEOUT = 10.0
MAX_EARLY_EVENTS = 4096
"""Events that may come after the WELCOME before the handshake has checked it (a handful, in one
loop turn); more ends the connection. Their bytes are bounded by the streams' windows."""
"""Seconds the relay has to answer the WebSocket upgrade, and then HELLO with WELCOME."""
DECIDED_BODY_TIMEOUT = 5.0
"""Seconds to wait for the body of a request a rule at the relay answered (it is already there)."""
LEAVE_GRACE = 5.0
"""Seconds a stopping tunnel gives the requests in flight to finish after its GOAWAY, before it
closes the connection (and cuts what is still running)."""
REQUEST_WINDOW = 4 << 20
"""Request body bytes the relay may send on a stream before the local service took them.

Larger than the protocol's 1 MiB default: with 1 MiB a large upload waited for credit between
batches even on loopback (100 MiB uploads: about 270-360 MiB/s at 1 MiB, 380-510 at 4 MiB)."""
HELD_REQUESTS = 64 << 20
"""Request body bytes (and WebSocket messages) the relay sent that the local service has not
taken yet, at most, over all the streams of one connection (``Session.shed``).

A relay may send each stream's window (``REQUEST_WINDOW``) before the local service reads a
byte, and may open 1,024 streams: 4 GiB. Sixteen uploads to a service that stopped reading fit.

The bytes on their way add a slack that does not grow with how the relay batches them
(docs/protocol.md, Transport): the socket hands on each read as it comes (``socket.py``; it
held a whole WebSocket frame, up to 64 MiB, several times over), the protocol keeps at most one
incomplete frame, and the shedding runs on the event that passes the ceiling. 120 streams sent
their 4 MiB windows in frames of 60 MiB, to a service reading nothing: the agent's peak memory
rose by 140 MiB (this ceiling and the recorder's body budget are 64 MiB each), 350 MiB before."""
SHED_LOG_INTERVAL = 10.0
"""Seconds between two log lines about streams ``Session.shed`` reset."""


class TunnelContext(Protocol):
    """What a session uses of its tunnel (``tunnel.AgentTunnel`` is one).

    Read when needed, never copied: the config and the routes change with the tunnel's rules.
    """

    name: str
    config: TunnelConfig
    """Its rules (sent in HELLO and RULES), and how a WebSocket reaches the target."""
    forwarder: Forwarder
    routes: dict[int, Forwarder]
    """The targets of the tunnel's ``forward`` rules, by rule number."""
    sink: Callable[[Exchange, bool], None] | None
    body_cap: int
    live: LiveSnapshots | None
    budget: BodyBudget | None
    """The agent's bound on the body bytes its captures in flight keep (None: none)."""
    requests: int
    """Streams carried since the tunnel started: the session counts each request it opens."""

    def pool_changed(self, members: int) -> None:
        """The relay says how many agents share the tunnel's name now."""


class Session:
    """One WebSocket connection of a tunnel to its relay, from HELLO to close."""

    def __init__(self, tunnel: TunnelContext, ws: TunnelSocket) -> None:
        self.tunnel = tunnel
        self.ws = ws
        self.conn = AgentConnection(initial_window=REQUEST_WINDOW)
        self.streams: dict[int, AgentStream] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.quick: dict[int, QuickAnswer] = {}
        """Streams answered from callbacks, without a task (``quick.QuickAnswer``)."""
        self.routed: dict[int, Forwarder] = {}
        """Streams a ``forward`` rule routed to another of the tunnel's targets."""
        self.goaway: GoAway | None = None
        self.held = 0
        """Bytes the relay sent on the streams that were not acknowledged yet (the sum of their
        ``AgentStream.held``): the local service has not taken them."""
        self.held_limit = HELD_REQUESTS
        self._shed_quiet_until = 0.0
        self._shed_unlogged = 0
        self._loop = asyncio.get_running_loop()
        self._flush_pending = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._welcome: asyncio.Future[Welcome] = self._loop.create_future()
        self._ended: asyncio.Future[str] = self._loop.create_future()
        """Set with the reason when the session must end although the socket is still open."""
        self._idle: asyncio.Future[None] | None = None
        """While ``leave`` lets the open HTTP streams finish: set once none is left."""
        self._websockets: set[int] = set()
        """The open streams that carry a WebSocket (``leave`` does not wait for those)."""
        self.rules_enforced = False
        """The relay said it enforces rules (WELCOME): it strips ``devtunnel-rule`` from public
        requests, so the header on a REQUEST is the relay's word."""
        self._told_bad_notice = False
        self._early: list[Event] | None = []
        """Events that came after the WELCOME before ``handshake`` checked it and read whether the
        relay enforces rules (None once it has): a REQUEST in the WELCOME's read is then a rule's
        notice, and went to the local service as a request when dispatched at once."""
        ws.on_message = self._on_message
        ws.on_writable = self._wake_drainers

    # -- Link, for the streams --------------------------------------------------------
    def kick(self, *, ending: bool = False) -> None:
        """Send whatever the connection queued, once the current callbacks are done.

        Every frame queued by the streams in one turn of the event loop goes out as one
        WebSocket message. A stream that just queued its last frame (``ending``) while it is
        the only one open has nothing to share a message with: its frames go at once.
        """
        if ending and len(self.streams) <= 1:
            self._flush()
            return
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    async def drained(self) -> None:
        """Wait until everything queued so far went to the socket, and it takes more."""
        while self._flush_pending or (self.ws.paused and not self.ws.transport.is_closing()):
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _flush(self) -> None:
        self._flush_pending = False
        data = self.conn.data_to_send()
        # One WebSocket message per batch: frames of many streams share it. Nothing can be
        # sent once the socket is closing: the streams are being cancelled then.
        if data:
            self.ws.send_now(data)
        if self._drain_waiters and not self.ws.paused:  # (a quick answer waits for none)
            self._wake_drainers()

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- receiving ------------------------------------------------------------------------
    def _on_message(self, data: bytes, text: bool) -> None:
        # Called by the socket's data_received: nothing may escape into the transport.
        try:
            self._receive(data, text)
        except Exception as exc:  # a defect: end this connection (the tunnel reconnects), loudly
            log.exception("tunnel %s: failed to handle a message from the relay", self.tunnel.name)
            self._end(f"internal error in the agent: {exc!r}")

    def _on_events(self, events: list[Event]) -> None:
        """Dispatch events held back during the handshake, as ``_on_message`` would have."""
        try:
            self._dispatch(events)
        except Exception as exc:  # a defect: end this connection (the tunnel reconnects), loudly
            log.exception("tunnel %s: failed to handle a message from the relay", self.tunnel.name)
            self._end(f"internal error in the agent: {exc!r}")
        if self.conn.wants_to_send:
            self.kick()

    def _receive(self, data: bytes, text: bool) -> None:
        if self._ended.done():
            return
        if text:
            self._end("the relay sent text where the tunnel protocol was expected")
            return
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as exc:
            self.conn.send_goaway(ErrorCode.PROTOCOL_ERROR, str(exc))
            self._flush()
            self._end(f"the relay broke the tunnel protocol: {relay_text(str(exc))}")  # (it may quote the relay)
            return
        if not self._welcome.done():
            for i, event in enumerate(events):
                if isinstance(event, Welcome):
                    self._welcome.set_result(event)
                    events = events[i + 1 :]
                    break
                if isinstance(event, GoAway):
                    self._welcome.set_exception(goaway_error(event))
                    return
            else:
                return
        early = self._early
        if early is not None:  # the WELCOME is not checked yet: what follows it waits (handshake)
            early.extend(events)
            if len(early) > MAX_EARLY_EVENTS:
                self._end("the relay sent too much before the handshake was done")
            return
        self._dispatch(events)
        if self.conn.wants_to_send:  # a PONG, a refusal or window credit
            self.kick()

    def _end(self, reason: str) -> None:
        if not self._welcome.done():
            self._welcome.set_exception(RelayUnreachableError(reason))
        if not self._ended.done():
            self._ended.set_result(reason)

    async def _until_closed_or(self, future: asyncio.Future[object]) -> None:
        """Wait until ``future`` is done or the socket closed."""
        closed = asyncio.ensure_future(self.ws.wait_closed())
        try:
            await asyncio.wait((closed, future), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()

    def _closed_reason(self) -> str:
        exc = self.ws.close_exc
        if isinstance(exc, ConnectionClosedOK):
            return "the relay closed the connection"
        return f"the connection to the relay was lost ({exc})"

    # -- handshake ----------------------------------------------------------------------
    async def handshake(self, token: str, name: str, instance: str | None = None, *, pool: bool = False) -> Welcome:
        """Say HELLO; return the WELCOME.

        ``instance`` is the tunnel's instance id: the relay gives the name straight back to a
        connection with the instance id of the one holding it (``docs/protocol.md``). ``pool``
        asks to share the name with the other agents of the token asking the same.

        Raises:
            AuthError, NameTakenError (NameInUseError), RelayUnreachableError.
            TunnelError: the WELCOME is for another name or has no public URL of this one
                (``relay_signals.check_welcome``), or the relay does not enforce the rules.
        """
        # Not the target: the relay has no need to know local addresses.
        # RULE_BODIES: it reads a rule's notice that carries only part of a request body.
        info: dict[str, object] = {"agent": f"devtunnel/{__version__}", RULE_BODIES: 1}
        # Sent even without rules: it tells the relay that this agent understands its notices.
        self.conn.send_hello(token, name, info, instance=instance, pool=pool, rules=self._rules())
        self._flush()
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                await self._until_closed_or(self._welcome)  # type: ignore[arg-type]
        except TimeoutError as exc:
            raise RelayUnreachableError(f"the relay did not answer the handshake in {HANDSHAKE_TIMEOUT:g} s") from exc
        if not self._welcome.done():
            raise RelayUnreachableError(f"the relay closed the connection during the handshake ({self.ws.close_exc})")
        welcome = self._welcome.result()
        check_welcome(name, welcome)
        self.rules_enforced = welcome.info.get(RULES_ACK) == WIRE_VERSION
        if self.tunnel.config.rules and not self.rules_enforced:
            relay = welcome.info.get("relay")
            raise TunnelError(
                f"the relay ({relay_text(relay) if isinstance(relay, str) else 'an older devtunnel'}) does not enforce"
                " rules, so this tunnel's rules would not apply: upgrade the relay, or start the tunnel without rules"
            )
        early, self._early = self._early, None
        if early:  # what came with the WELCOME, now that it is known what a rule's notice is
            self._on_events(early)
        return welcome

    def _rules(self) -> dict[str, object]:
        return {"version": WIRE_VERSION, "list": rules_to_wire(self.tunnel.config.rules)}

    def send_rules(self) -> None:
        """Send the tunnel's rules as they are now (a RULES frame): the relay replaces its copy."""
        try:
            self.conn.send_rules(self._rules())
        except ProtocolError as exc:  # the connection is ending: the next HELLO carries them
            log.debug("tunnel %s: rules not sent: %s", self.tunnel.name, exc)
            return
        self.kick()

    # -- serving --------------------------------------------------------------------------
    async def serve(self) -> str:
        """Carry streams until the connection ends; returns why it ended.

        Raises:
            AuthError, NameTakenError: the relay ended the tunnel for good.
        """
        self.kick()
        failed: BaseException | None = None
        try:
            await self._until_closed_or(self._ended)  # type: ignore[arg-type]
            reason = self._ended.result() if self._ended.done() else self._closed_reason()
        except BaseException as exc:  # cancelled, or a defect: closed first, then raised again
            failed = exc
        # After the handler, not in a ``finally``: nothing awaits while an exception is being
        # handled (devtunnel/native.py says why).
        await self.close_streams()
        await self.ws.close()
        if failed is not None:
            raise failed
        if self.goaway is not None:
            if self.goaway.code in FINAL_GOAWAYS:
                raise goaway_error(self.goaway)
            if self.goaway.code == ErrorCode.NAME_IN_USE:
                reason = f"the relay gave the name to another connection: {goaway_reason(self.goaway)}"
            else:
                reason = f"the relay is going away: {goaway_reason(self.goaway)}"
        return reason

    async def close_streams(self) -> None:
        """Cancel every stream still running (their exchanges are recorded as cut short)."""
        for quick in list(self.quick.values()):
            quick.cancel()
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def leave(self, reason: str, *, grace: float = 0.0) -> None:
        """Tell the relay we are going (GOAWAY) and close the socket.

        With ``grace``, the HTTP streams already open finish first, for up to ``grace`` seconds
        (as GOAWAY allows, docs/protocol.md): a response whose head reached the public client
        is not cut. The relay opens no new stream after the GOAWAY; the connection refuses one
        that crossed it (RESET REFUSED_STREAM). WebSockets, which may last for hours, are not
        waited for. The streams cut then are recorded ``agent_stopped`` (``AgentStream.stopped``),
        unless the connection broke meanwhile (``agent_gone``, as any break records them).
        """
        began = self._loop.time()
        self.conn.send_goaway(ErrorCode.NO_ERROR, reason)
        self._flush()
        if grace > 0 and not self._http_done():
            log.info("tunnel %s: letting running requests finish (%d, up to %g s)", self.tunnel.name,
                     self._http_running(), grace)
            idle = self._idle = self._loop.create_future()
            try:
                async with asyncio.timeout(grace):
                    await self._until_closed_or(idle)
                why = "told to stop now" if idle.done() else "the connection closed"
            except TimeoutError:
                why = f"after {grace:g} s"
            finally:
                self._idle = None
            if not self._http_done():
                log.warning("tunnel %s: cutting the requests still running (%d, %s)", self.tunnel.name,
                            self._http_running(), why)
            self._flush()  # the last frames of the streams that finished
        if not self.ws.transport.is_closing():  # cut by this stop, not by a connection that broke meanwhile
            stopped = f"the agent stopped the tunnel after {round(self._loop.time() - began, 1):g} s of grace"
            for stream in self.streams.values():
                stream.stopped = stopped
        await self.ws.close()

    def hurry(self) -> None:
        """Stop waiting for the requests ``leave`` lets finish: it closes the connection now."""
        idle = self._idle
        if idle is not None and not idle.done():
            idle.set_result(None)

    def _forget(self, stream_id: int) -> None:
        """A stream ended: stop tracking it (and tell ``leave`` when it was the last HTTP one)."""
        stream = self.streams.pop(stream_id, None)
        if stream is not None and stream.held:
            self.held -= stream.held  # what it was sent and never passed on
            stream.held = 0
        self._websockets.discard(stream_id)
        idle = self._idle
        if idle is not None and self._http_done() and not idle.done():
            idle.set_result(None)

    def _http_done(self) -> bool:
        """No stream is open but WebSockets."""
        return len(self.streams) == len(self._websockets)

    def _http_running(self) -> int:
        return len(self.streams) - len(self._websockets)

    def _dispatch(self, events: list[Event]) -> None:
        streams = self.streams
        for event in events:
            # Ordered by how often each event arrives; the event classes have no subclasses, so
            # their exact type says which it is (no isinstance call per event).
            kind = type(event)
            if kind is RequestReceived:
                self._open(event)  # type: ignore[arg-type]  # mypy does not narrow by exact type
            elif kind is DataReceived or kind is WebSocketMessageReceived or kind is WebSocketClosed:
                stream = streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None:
                    stream.events.put_nowait(event)
                    if kind is not WebSocketClosed:
                        # Counted until the handler acknowledges them (AgentStream.acknowledge).
                        n = len(event.data)  # type: ignore[attr-defined]
                        stream.held += n
                        self.held += n
                        if self.held > self.held_limit:
                            self.shed()
            elif isinstance(event, WindowUpdated):
                if event.stream_id == 0:
                    for stream in streams.values():
                        stream.window_opened()
                else:
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.window_opened()
            elif isinstance(event, StreamReset):
                stream = streams.get(event.stream_id)
                if stream is None:
                    continue
                if event.code == ErrorCode.TOO_LARGE:
                    # The relay dropped it for a limit of its own (its --max-body, or the responses
                    # it holds): the record says so, not that the public client went away.
                    stream.shed = relay_text(event.reason) or "the relay reset it as too large"
                elif event.code == ErrorCode.CLIENT_TIMEOUT:
                    # The relay answered 408: its client sent the request body too slowly.
                    stream.timed_out = relay_text(event.reason) or "the request body came too slowly"
                task = self.tasks.get(event.stream_id)
                if task is not None:
                    stream.reset_code = event.code
                    task.cancel()
                quick = self.quick.get(event.stream_id)
                if quick is not None:
                    stream.reset_code = event.code
                    quick.cancel()
            elif isinstance(event, PoolChanged):
                self.tunnel.pool_changed(event.members)
            elif isinstance(event, GoAway):
                self.goaway = event
                # Debug only: the line that says the tunnel went offline (``run``'s reason, or the
                # error of a final GOAWAY) gives this reason to the user once.
                log.debug("tunnel %s: the relay is going away: %s", self.tunnel.name, goaway_reason(event))

    def shed(self) -> None:
        """The streams hold more than ``held_limit`` bytes the local service has not taken:
        reset the ones holding the most until they are within it again.

        Each goes with a RESET (TOO_LARGE) saying why, its local connection closed (its task
        is cancelled) and its exchange recorded as ``too_large``; one log line per
        ``SHED_LOG_INTERVAL``. Looking for the largest is a scan, but only past the ceiling."""
        limit = self.held_limit
        while self.held > limit:
            stream = max(self.streams.values(), key=_held)
            held = stream.held
            if not held:
                return  # (not reached: the bytes counted are in the streams)
            total = self.held
            reason = (
                f"the agent holds {format_size(total)} of request bodies the local service has not read "
                f"(at most {format_size(limit)}); this stream held the most: {format_size(held)}"
            )
            stream_id = stream.stream_id
            self._forget(stream_id)  # its bytes no longer count, nor do those still on their way
            stream.shed = reason
            stream.reset_code = ErrorCode.TOO_LARGE
            self.conn.reset_stream(stream_id, ErrorCode.TOO_LARGE, reason)
            self.kick()
            task = self.tasks.get(stream_id)
            if task is not None:
                task.cancel()
            quick = self.quick.get(stream_id)
            if quick is not None:
                quick.cancel()
            now = self._loop.time()
            if now < self._shed_quiet_until:
                self._shed_unlogged += 1
                continue
            more, self._shed_unlogged = self._shed_unlogged, 0
            self._shed_quiet_until = now + SHED_LOG_INTERVAL
            log.warning(
                "tunnel %s: reset stream %d, the one holding the most request body bytes the local service had"
                " not read (%s): the agent held %s of them (at most %s)%s",
                self.tunnel.name, stream_id, format_size(held), format_size(total), format_size(limit),
                f"; {more} more reset since the last such line" if more else "",
            )

    def _open(self, head: RequestReceived) -> None:
        tunnel = self.tunnel
        if self.ws.protocol.close_rcvd is not None:
            self._drop_stale(head)
            return
        forwarder = tunnel.forwarder
        refused = None
        if head.scheme not in SCHEMES:
            # The record and its exports put the scheme before the Host: one that is not a
            # scheme ("https://elsewhere/#") made them a URL of another host. Recorded as http.
            refused = scheme_problem(head.scheme)
            head = dataclasses.replace(head, scheme="http")
        if head.http_version not in USUAL_VERSIONS:
            # Written after "HTTP/" by the record and its exports: one with an escape sequence
            # reached a terminal through them. Refused, and recorded as 1.1.
            version_refused = version_problem(head.http_version)
            if version_refused is not None:
                refused = refused or version_refused
                head = dataclasses.replace(head, http_version=b"1.1")
        mark: RuleMark | None = None
        if self.rules_enforced:
            head, mark, status, size, cut = rule_of(head)
            if mark is not None and mark.action != "forward":
                # The relay parsed and judged that request: a head no request may have is not its
                # word, and its record would carry the injection into a raw or curl export.
                bad = refused or head_problem(head.method, head.target, head.headers, upgrade=head.websocket,
                                              ended=head.end_stream)
                if bad is not None:
                    self._ignore_notice(head.stream_id, bad)
                    return
                if head.headers and not fields_are_safe(*zip(*head.headers)):
                    # As forwarding drops them: a field that cannot be written on a line of its own.
                    head = dataclasses.replace(head, headers=tuple(f for f in head.headers if field_is_safe(*f)))
                self._record_decided(head, mark, status, size, cut)
                return
            if mark is not None:
                route = tunnel.routes.get(mark.index) if mark.scope == "tunnel" else None
                if route is None:
                    mark = None  # not one of our forward rules: the tunnel's own target
                else:
                    forwarder = route
        # Checked here as at the relay: a relay (hostile, or older) must not make the agent
        # send anything but a path to the local service.
        problem = refused or head_problem(head.method, head.target, head.headers, upgrade=head.websocket, ended=head.end_stream)
        # An HTTP request goes out on a kept-alive local connection first thing: the local
        # service works on it while the rest is set up (and before a task could run).
        start = None if head.websocket or problem else forwarder.start(head)
        stream = AgentStream(self, head.stream_id)
        self.streams[head.stream_id] = stream
        if head.websocket:
            self._websockets.add(head.stream_id)
        tunnel.requests += 1
        cap = ExchangeCapture(tunnel.sink, tunnel.name, head, forwarder.target_url, tunnel.body_cap, live=tunnel.live,
                              budget=tunnel.budget)
        cap.rule = mark
        if start is not None and start.conn is not None and head.end_stream:
            self.quick[head.stream_id] = QuickAnswer(
                forwarder, stream, head, cap, start, done=self._quick_done, hand_off=self._quick_hand_off
            )
            return
        if problem is not None:
            self._refuse(stream, head, cap, problem)
            return
        if forwarder is not tunnel.forwarder:
            self.routed[head.stream_id] = forwarder
        self._spawn(stream, head, cap, start)

    def _drop_stale(self, head: RequestReceived) -> None:
        """Record, and send nowhere, a request that came in the same read as the relay's close.

        The relay closed the connection before the agent read the request, so it has answered
        the client already (502, the tunnel went offline): an agent suspended (a laptop's lid,
        SIGSTOP) past the relay's ping timeout finds both waiting in its socket when it wakes.
        Sent on, a webhook would be processed although its sender saw 502 and sends it again."""
        tunnel = self.tunnel
        tunnel.requests += 1
        cap = ExchangeCapture(tunnel.sink, tunnel.name, head, tunnel.forwarder.target_url, tunnel.body_cap,
                              live=tunnel.live, budget=tunnel.budget)
        cap.fail("agent_gone", "the relay closed the tunnel before the agent read this request (it had"
                 " answered the client): not sent to the local service")
        cap.end()
        cap.finish()

    def _ignore_notice(self, stream_id: int, problem: str) -> None:
        """Reset a rule's notice whose head no request may have, unrecorded; said once a connection."""
        if not self._told_bad_notice:
            self._told_bad_notice = True
            log.warning("tunnel %s: the relay sent the record of a request a rule answered with a head no request"
                        " may have (%s); not recorded", self.tunnel.name, relay_text(problem))
        try:
            self.conn.reset_stream(stream_id, ErrorCode.PROTOCOL_ERROR, "not a request head")
        except ProtocolError:
            pass
        self.kick()

    def _record_decided(self, head: RequestReceived, mark: RuleMark, status: int, size: int, cut: int | None) -> None:
        """Record a request a rule at the relay answered with ``status`` and a body of ``size``
        bytes; it goes nowhere (the relay answered it).

        The stream carries the head (and the request body, or its first bytes when the relay
        says it is cut: ``cut``, its size as the relay knows it) and is reset at once."""
        tunnel = self.tunnel
        tunnel.requests += 1
        cap = ExchangeCapture(tunnel.sink, tunnel.name, head, "", tunnel.body_cap, budget=tunnel.budget)
        cap.rule = mark
        if status:
            cap.response_head(status, b"", ())
            cap.response_body_unseen(size)
        else:
            cap.exchange.error_message = f"the relay closed the connection ({mark.label()}: drop)"
        if head.end_stream:
            self._end_decided(head.stream_id, cap, cut)
            return
        # The request body follows in one DATA frame: keep it for the record.
        stream = AgentStream(self, head.stream_id)
        self.streams[head.stream_id] = stream
        task = self._loop.create_task(self._collect_decided(stream, cap))
        self.tasks[head.stream_id] = task
        task.add_done_callback(lambda _: self._end_decided(head.stream_id, cap, cut))

    async def _collect_decided(self, stream: AgentStream, cap: ExchangeCapture) -> None:
        try:
            async with asyncio.timeout(DECIDED_BODY_TIMEOUT):
                while True:
                    event = await stream.events.get()
                    if isinstance(event, DataReceived):
                        cap.request_body(event.data)
                        if event.end_stream:
                            return
        except TimeoutError:
            log.debug("tunnel %s: stream %d: the rest of a body a rule answered never came", self.tunnel.name, stream.stream_id)

    def _end_decided(self, stream_id: int, cap: ExchangeCapture, cut: int | None) -> None:
        self._forget(stream_id)
        if cut is not None:
            cap.request_body_cut(cut)
        self.tasks.pop(stream_id, None)
        try:
            self.conn.reset_stream(stream_id, ErrorCode.NO_ERROR, "recorded")
        except ProtocolError:
            pass  # the relay closed it already, or the connection is gone
        self.kick()
        cap.finish()

    def _spawn(self, stream: AgentStream, head: RequestReceived, cap: ExchangeCapture, start: Start | None) -> None:
        task = self._loop.create_task(self._serve_stream(stream, head, cap, start))
        self.tasks[head.stream_id] = task
        task.add_done_callback(functools.partial(self._stream_done, stream, cap, start))

    def _quick_hand_off(self, quick: QuickAnswer) -> None:
        """A quick answer cannot finish on its own: the stream's task takes over from the start."""
        del self.quick[quick.stream.stream_id]
        if quick.forwarder is not self.tunnel.forwarder:
            self.routed[quick.stream.stream_id] = quick.forwarder
        self._spawn(quick.stream, quick.head, quick.cap, quick.start)

    def _quick_done(self, quick: QuickAnswer) -> None:
        stream_id = quick.stream.stream_id
        self._forget(stream_id)
        self.quick.pop(stream_id, None)
        quick.cap.end()
        # As after a task: the record is built once the flush queued before it went out.
        self._loop.call_soon(quick.cap.finish)

    def _refuse(self, stream: AgentStream, head: RequestReceived, cap: ExchangeCapture, problem: str) -> None:
        """Answer a request that fails the head rule with 400; the local service never sees it."""
        task = self._loop.create_task(self._answer_refusal(stream, head, cap, problem))
        self.tasks[head.stream_id] = task
        task.add_done_callback(functools.partial(self._stream_done, stream, cap, None))

    async def _answer_refusal(self, stream: AgentStream, head: RequestReceived, cap: ExchangeCapture, problem: str) -> None:
        log.debug("tunnel %s: stream %d refused: %s", self.tunnel.name, stream.stream_id, problem)
        message = f"devtunnel refused to forward this request: {problem}\n"
        try:
            await answer_error(stream, cap, 400, "bad_request", message, head_only=head.method == b"HEAD")
            if not head.end_stream:
                stream.reset(ErrorCode.NO_ERROR, "response complete")
        except asyncio.CancelledError:
            pass  # reset by the relay or the session is ending: _stream_done records why
        except StreamClosedError as exc:
            cap.fail("client_gone", str(exc))
        finally:
            cap.end()

    async def _serve_stream(
        self, stream: AgentStream, head: RequestReceived, cap: ExchangeCapture, start: Start | None
    ) -> None:
        tunnel = self.tunnel
        forwarder = self.routed.get(stream.stream_id, tunnel.forwarder)
        try:
            if head.websocket:
                await forward_websocket(
                    stream, head, cap, tunnel=tunnel.name, target=forwarder.target,
                    rewrite_host=tunnel.config.host_header == "rewrite", insecure=tunnel.config.insecure,
                    gate=forwarder.gate,
                )
            else:
                await forwarder.handle(stream, head, cap, start)
        except asyncio.CancelledError:
            pass  # reset by the relay or the session is ending; the handler recorded why
        except Exception as exc:  # a defect must cost one stream, never the tunnel
            log.exception("tunnel %s: stream %d failed", tunnel.name, stream.stream_id)
            cap.fail("local_error", f"internal error: {exc!r}")
            try:
                stream.reset(ErrorCode.LOCAL_ERROR, "internal error in the agent")
            except ProtocolError:
                pass
        finally:
            cap.end()

    def _stream_done(
        self, stream: AgentStream, cap: ExchangeCapture, start: Start | None, task: asyncio.Task[None]
    ) -> None:
        """After a stream's task, however it ended (even cancelled before it ever ran)."""
        self._forget(stream.stream_id)
        self.routed.pop(stream.stream_id, None)
        self.tasks.pop(stream.stream_id, None)
        if start is not None and start.conn is not None:
            start.conn.abort()  # the task never took over the connection its request went to
            start.conn = None
        if task.cancelled():
            cap.fail(*stream.cut("before the request was forwarded"))
        # The record is built and handed on after the last frames went out: their flush was
        # queued before this callback, so recording never delays the response.
        cap.finish()


def _held(stream: AgentStream) -> int:
    return stream.held
