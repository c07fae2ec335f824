"""Build the ``Exchange`` record of one stream while it is forwarded, without slowing it.

The hot path only keeps references and appends to capped ``bytearray`` copies of the bodies;
everything else (serialising, writing SQLite) happens in the recorder's thread. An exchange
still running after ``LIVE_AFTER`` seconds is handed over once early, so long requests and
WebSocket sessions show up while they last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from devtunnel.agent.devservers import SCANNED, STATUSES, WS_SCANNED
from devtunnel.capture.model import Exchange, ErrorKind, Headers, Request, Response, RuleMark, WsMessage, new_id
from devtunnel.protocol.events import Fields, RequestReceived
from devtunnel.values.numbers import is_decimal
from devtunnel.values.sizes import format_size

__all__ = [
    "BodyBudget", "ExchangeCapture", "ExchangeSink", "LiveSnapshots", "DEFAULT_BODY_BUDGET", "LIVE_AFTER",
    "LIVE_BODY_PREVIEW",
]

log = logging.getLogger("devtunnel.agent")

DEFAULT_BODY_BUDGET = 64 << 20
"""Bytes of bodies the captures of one agent keep, at most, over all the exchanges in flight
(``--body-budget``): six body caps of the default 10 MiB, and the bytes of request bodies a
session holds for a local service that does not read (``session.HELD_REQUESTS``)."""

BUDGET_LOG_INTERVAL = 10.0
"""Seconds between two log lines saying the body budget was used up."""

LIVE_AFTER = 0.5
"""Seconds after which a running exchange is submitted once as it is so far."""

LIVE_BODY_PREVIEW = 64 * 1024
"""Bytes of each body a live snapshot carries; the final record has all that was kept.

Joining a large body for the snapshot would hold it twice in memory while the transfer is
still at full speed, and write it to the store twice."""

ExchangeSink = Callable[[Exchange, bool], None]
"""Receives ``(exchange, final)``: a live snapshot (``final=False``) or the finished record."""


class BodyBudget:
    """The bytes of bodies (and WebSocket payloads) the captures of one agent keep while their
    exchanges are in flight, and how many they may keep at most.

    Each capture takes from it as it keeps a chunk (a comparison and a subtraction, on the event
    loop: no lock) and gives back all it took when it finishes (``ExchangeCapture.finish``,
    which every way an exchange ends comes to, once). A capture that finds it used up keeps no
    more of that body, whatever it would free later: its record is cut there, and says why
    (``starved``). The traffic itself never waits for it: bodies flow whole.
    """

    __slots__ = ("limit", "left", "_quiet_until")

    def __init__(self, limit: int = DEFAULT_BODY_BUDGET) -> None:
        self.limit = limit
        self.left = limit
        """Bytes the captures in flight may still keep."""
        self._quiet_until = 0.0

    @property
    def used(self) -> int:
        """Bytes the captures in flight keep now (0 once none is in flight)."""
        return self.limit - self.left

    def ran_out(self) -> None:
        """A body was cut for want of budget: said in the log once per ``BUDGET_LOG_INTERVAL``."""
        now = time.monotonic()
        if now >= self._quiet_until:
            self._quiet_until = now + BUDGET_LOG_INTERVAL
            log.warning("recording: the requests in flight keep as many body bytes as the agent allows"
                        " (%s, --body-budget): their records are cut; the traffic is not", format_size(self.limit))


class _Body:
    """A body's real size and its first ``cap`` bytes.

    The kept bytes stay as the chunks that arrived (immutable ``bytes``, referenced, not
    copied) until they are asked for: then they are joined once. Growing a ``bytearray``
    instead reallocates it as it grows, briefly holding two copies of a large body.

    With a ``budget``, each byte kept is taken from it (``kept`` is what this body took); once
    it runs out, ``cap`` becomes what was kept, so the body is never kept with a hole in it,
    and ``starved`` says so.
    """

    __slots__ = ("cap", "size", "kept", "_chunks", "budget", "starved")

    def __init__(self, cap: int, budget: BodyBudget | None = None) -> None:
        self.cap = cap
        self.size = 0
        self.kept = 0
        self._chunks: list[bytes] = []
        self.budget = budget
        self.starved = False

    def add(self, chunk: bytes | memoryview) -> None:
        n = len(chunk)
        self.size += n
        room = self.cap - self.kept
        if room > 0:
            if n > room:
                chunk = chunk[:room]
                n = room
            budget = self.budget
            if budget is not None:
                left = budget.left
                if n > left:  # the budget cuts it: nothing more is kept of this body
                    self._starve(budget)
                    if left <= 0:
                        return
                    chunk = chunk[:left]
                    n = left
                budget.left = left - n
            # A view may be of a buffer its owner reuses: only immutable bytes are kept as they are.
            self._chunks.append(chunk if type(chunk) is bytes else bytes(chunk))
            self.kept += n

    def _starve(self, budget: BodyBudget) -> None:
        """The budget has less room than this chunk: keep what fits of it, then nothing more."""
        self.cap = self.kept + max(budget.left, 0)
        self.starved = True
        budget.ran_out()

    def give_back(self) -> int:
        """Keep no more, and return the bytes taken from the budget (once: then 0)."""
        if self.budget is None:
            return 0
        self.budget = None
        self.cap = self.kept
        return self.kept

    def value(self) -> bytes:
        """The kept bytes, joined once (a live snapshot and the final record share the result)."""
        chunks = self._chunks
        if not chunks:
            return b""
        if len(chunks) > 1:
            chunks[:] = [b"".join(chunks)]
        return chunks[0]

    def preview(self, limit: int) -> bytes:
        """Up to ``limit`` of the kept bytes, leaving the chunks as they are."""
        if self.kept <= limit:
            return self.value()
        out: list[bytes] = []
        room = limit
        for chunk in self._chunks:
            if room <= 0:
                break
            out.append(chunk[:room])
            room -= len(chunk)
        return b"".join(out)


def _version(raw: bytes) -> str:
    text = raw.decode("latin-1")
    return text[5:] if text.upper().startswith("HTTP/") else text


_VERSIONS = {raw: _version(raw) for raw in (b"1.1", b"1.0", b"HTTP/1.1", b"HTTP/1.0")}
"""``_version`` of the versions requests come with, looked up rather than worked out."""


class ExchangeCapture:
    """The record of one stream, filled in by its handler as the exchange goes.

    While the exchange runs, the capture only keeps what it is given (the request head,
    timestamps, the response head's fields, body chunks); the ``Exchange`` record is built
    from them when it is first needed, normally in ``finish()``, which the session calls once
    the response is on its way. So building the record never delays a request or a response.

    Args:
        sink: where the exchange goes (snapshots and the final record); ``None`` records nothing.
        tunnel: the tunnel's name.
        head: the request head as the relay sent it.
        target_url: the local service the request goes to.
        body_cap: bytes of each body (and of all WebSocket payloads together) to keep.
        live: where to wait for a snapshot of an exchange still running after ``LIVE_AFTER``
            seconds (``finish()`` stops the wait); None submits only the final record, and says
            that the record is kept nowhere (a tunnel that records nothing has no snapshots:
            ``--no-record``, ``record = false``). Such a capture keeps, whatever ``body_cap``,
            the first ``devservers.SCANNED`` bytes of a refusal's body (a status in
            ``devservers.STATUSES``) and ``devservers.WS_SCANNED`` of WebSocket payloads, which
            the agent's hints read. Any other body costs what it did: the status is looked at
            once per response with a body, and only by such a capture.
        budget: the agent's bound on the bytes all its captures in flight keep (``BodyBudget``):
            what this one keeps is taken from it, and given back once by ``finish()``; None: no bound.
    """

    __slots__ = (
        "_sink", "_t0", "_started_at", "_ended_at", "_cap", "_request_body", "_response_body", "_ws_budget",
        "_finished", "_id", "_tunnel", "_head", "_target_url", "_ttfb", "_response", "_error", "_exchange",
        "rule", "_live", "_request_cut", "_held_at", "_held", "_budget", "_ws_kept",
    )

    def __init__(
        self,
        sink: ExchangeSink | None,
        tunnel: str,
        head: RequestReceived,
        target_url: str,
        body_cap: int,
        *,
        live: LiveSnapshots | None = None,
        budget: BodyBudget | None = None,
    ) -> None:
        self._sink = sink
        self._t0 = time.monotonic()
        self._started_at = time.time()
        self._ended_at: float | None = None
        self._cap = body_cap
        self._request_body: _Body | None = None  # made by the first chunk: most requests have none
        self._request_cut = False
        self._response_body: _Body | None = None
        self._ws_budget = body_cap  # bytes of payloads still kept; -1 once the agent's budget cut them
        self._ws_kept = 0
        self._budget = budget
        self._finished = False
        self._id = new_id(self._started_at)  # now: ids sort in the order requests arrived
        self._tunnel = tunnel
        self._head = head
        self._target_url = target_url
        self._ttfb: float | None = None
        self._response: tuple[int, bytes, Fields, str, bool] | None = None
        self._error: tuple[ErrorKind, str] | None = None
        self._exchange: Exchange | None = None
        self.rule: RuleMark | None = None
        """The rule at the relay that answered or routed this request."""
        self._held: float | None = None
        """Seconds it waited for the app before its present wait, if any; None if it never waited
        (or only to learn the app stopped): with ``_held_at``, what a request that does not wait looks at."""
        self._held_at: float | None = None
        """When its present wait for the app began (None when it does not wait)."""
        self._live: LiveSnapshots | None = None
        if sink is not None and live is not None:
            self._live = live
            live.add(self)
        elif body_cap < WS_SCANNED:  # kept nowhere: the hints read a refused WebSocket's first messages
            self._ws_budget = WS_SCANNED

    @property
    def exchange(self) -> Exchange:
        """The record as it stands (built on first use; later events update it)."""
        ex = self._exchange
        if ex is None:
            head = self._head
            ex = self._exchange = Exchange.begun(
                self._id,
                self._tunnel,
                self._started_at,
                Request.received(
                    Headers.of_pairs(head.headers),  # the protocol's (bytes, bytes) tuple
                    _VERSIONS.get(head.http_version) or _version(head.http_version),
                    head.method.decode("latin-1"),
                    head.target,
                ),
                head.remote_addr,
                head.scheme,
                self._target_url,
                head.websocket,
                self.rule,
            )
        ex.ttfb = self._ttfb
        if self._response is not None and ex.response is None:
            status, reason, headers, version, exact = self._response
            ex.response = Response.received(
                Headers.of_pairs(headers) if exact else Headers(headers), version, status, reason.decode("latin-1"),
            )
        if self._error is not None and ex.error is None:
            ex.error, ex.error_message = self._error
        held, held_at = self._held, self._held_at
        if held is not None or held_at is not None:
            ex.holding = held_at is not None
            ex.held = (held or 0.0) + ((self._ended_at or time.monotonic()) - held_at if held_at is not None else 0.0)
        return ex

    def hold_began(self) -> None:
        """The request waits for the app to come back (``HoldGate.connect``, once a wait, never on the
        fast path; ``hold_ended`` follows).
        A live snapshot already stored said it was in flight (the app took it, then went down): a
        new one says it is held."""
        self._held_at = time.monotonic()
        self._resubmit()

    def hold_ended(self, counted: bool = True) -> None:
        """The request waits no more (sent, or answered 503): its wait is added to the record's
        ``held``, unless not ``counted`` (it waited only to learn that the app stopped for good:
        not held for it). A live snapshot already stored said it was held: a new one says it is not."""
        held_at = self._held_at
        self._held_at = None
        if counted:
            self._held = (self._held or 0.0) + time.monotonic() - held_at  # type: ignore[operator]
        self._resubmit()

    @property
    def waited(self) -> float:
        """Seconds the request waited for the app in its recorded waits that ended (``HoldGate``
        counts them against its hold)."""
        return self._held or 0.0

    def _resubmit(self) -> None:
        """A new live snapshot, if one was stored already (a later one comes by itself)."""
        live = self._live
        if live is not None and not live.watches(self):
            self._submit_live()

    @property
    def elapsed(self) -> float:
        """Seconds since the request head arrived."""
        return time.monotonic() - self._t0

    def request_body(self, chunk: bytes | memoryview) -> None:
        """Count (and keep up to the cap) a chunk of request body."""
        body = self._request_body
        if body is None:
            body = self._request_body = _Body(self._cap, self._budget)
        body.add(chunk)

    def request_body_cut(self, size: int = 0) -> None:
        """The exchange ended before the whole request body came (the local service answered
        first and the relay stopped sending it): the record says the body is partial, never
        that the bytes that came are all of it. ``size``: the body's size as far as the relay
        knew it (a rule's notice), counted when more than came: the record's size is at least it."""
        self._request_cut = True
        body = self._request_body
        if size > (0 if body is None else body.size):
            if body is None:
                body = self._request_body = _Body(self._cap, self._budget)
            body.size = size

    @property
    def request_body_full(self) -> bool:
        """True once as much of the request body as the cap (and the agent's budget) allows is recorded."""
        body = self._request_body
        return self._cap <= 0 if body is None else body.kept >= body.cap

    def first_byte(self) -> None:
        """The local service started answering."""
        if self._ttfb is None:
            self._ttfb = time.monotonic() - self._t0

    def response_head(
        self, status: int, reason: bytes, headers: Fields, http_version: str = "1.1", *, exact: bool = False
    ) -> None:
        """The response head that goes back to the public client (the last one given counts).

        ``exact``: ``headers`` is already a tuple of ``(bytes, bytes)`` pairs, kept without a copy.
        """
        if self._ttfb is None:  # the first byte too (``first_byte``, without its call)
            self._ttfb = time.monotonic() - self._t0
        self._response = (status, reason, headers, http_version, exact)
        if self._exchange is not None:
            self._exchange.response = None  # rebuilt from the new head

    def response_body(self, chunk: bytes | memoryview) -> None:
        """Count (and keep up to the cap) a chunk of response body."""
        body = self._response_body
        if body is None:
            # Kept nowhere (no ``live``; none once finished either, but no body comes then): the
            # hints read the start of a refusal's body whatever the cap.
            body = self._response_body = _Body(self._cap if self._live is not None else self._unkept_cap(), self._budget)
        body.add(chunk)

    def _unkept_cap(self) -> int:
        """The bytes to keep of a response body whose record is kept nowhere: at least
        ``SCANNED`` of a refusal's (a status in ``STATUSES``), else the cap."""
        response = self._response
        return max(self._cap, SCANNED) if response is not None and response[0] in STATUSES else self._cap

    def response_body_unseen(self, size: int) -> None:
        """Count ``size`` bytes of response body the agent never had (a rule at the relay
        answered with them): the record has the size, and says its body is cut."""
        body = self._response_body
        if body is None:
            body = self._response_body = _Body(self._cap)
        body.size += size

    def ws_message(self, sender: str, text: bool, payload: bytes) -> None:
        """Record one WebSocket message; payloads are kept until the cap (or the agent's budget) is spent."""
        room = self._ws_budget
        budget = self._budget
        if budget is not None and room > 0:
            left = budget.left
            if left < room and left < len(payload):  # nothing more is kept of this session's payloads
                room = left if left > 0 else 0
                # Left at -1 once this message took ``room``: the record marks the payloads cut
                # (``_mark_ws_budget_cut``), each of which the budget cut, none the cap.
                self._ws_budget = room - 1
                budget.ran_out()
        keep = payload[: max(0, room)]
        n = len(keep)
        self._ws_budget -= n
        if budget is not None:
            budget.left -= n
            self._ws_kept += n
        self.exchange.ws_messages.append(
            WsMessage(sender="client" if sender == "client" else "server", opcode=1 if text else 2,
                      time=time.time(), payload=bytes(keep), size=len(payload))
        )

    def ws_closed(self, code: int | None) -> None:
        """The WebSocket session ended with this close code."""
        self.exchange.ws_close_code = code

    def fail(self, kind: ErrorKind, message: str) -> None:
        """Mark the exchange as failed (the first failure wins)."""
        if self._error is None:
            self._error = (kind, message)

    def end(self) -> None:
        """The exchange is over: its duration stops here, even if ``finish()`` runs later."""
        if self._ended_at is None:
            self._ended_at = time.monotonic()

    def finish(self) -> Exchange:
        """Close the record and hand it to the sink; returns it. Later calls do nothing more."""
        if self._finished:
            return self.exchange
        self._finished = True
        live = self._live
        if live is not None:
            self._live = None
            live.discard(self)
        ended_at = self._ended_at
        if ended_at is None:  # (``end``, without its call: a handler has mostly called it)
            ended_at = self._ended_at = time.monotonic()
        ex = self.exchange
        ex.duration = ended_at - self._t0
        self._fill_bodies(ex)
        budget = self._budget
        if budget is not None:
            self._give_back(budget)
        if self._sink is not None:
            self._sink(ex, True)
        return ex

    def _give_back(self, budget: BodyBudget) -> None:
        """Give the budget all this capture took from it; it keeps nothing more (called once,
        by ``finish``: the record has its bodies, and the recorder owns them from here)."""
        self._budget = None
        self._cap = self._ws_budget = 0  # a body that begins now keeps nothing either
        taken = self._ws_kept
        self._ws_kept = 0
        body = self._request_body
        if body is not None:
            taken += body.give_back()
        body = self._response_body
        if body is not None:
            taken += body.give_back()
        budget.left += taken

    def _fill_bodies(self, ex: Exchange, limit: int | None = None) -> None:
        if self._ws_budget < 0:
            _mark_ws_budget_cut(ex.ws_messages)
        for message, body in ((ex.request, self._request_body), (ex.response, self._response_body)):
            if message is None:
                continue
            if body is None:  # no chunk came
                message.body, message.body_truncated, message.body_size = b"", False, 0
                continue
            if limit is None or body.kept <= limit:
                message.body, message.body_truncated = body.value(), body.size > body.kept
            else:
                message.body, message.body_truncated = body.preview(limit), True
            if body.starved:
                message.body_budget_cut = True
            message.body_size = body.size
        request = ex.request
        if self._request_cut or self._error is not None:
            # What the client said it would send: the bytes that came are the first of it. An
            # exchange that failed (the client went away mid-upload) says so only against a
            # Content-Length: a chunked body's end is not known here.
            declared = request.headers.get("content-length") or ""
            size = int(declared) if is_decimal(declared) and len(declared) <= 18 else None
            if (size is None and self._request_cut) or (size is not None and request.body_size < size):
                request.body_truncated = True
                request.body_size = max(request.body_size, size or 0)

    def _submit_live(self) -> None:
        if self._finished or self._sink is None:
            return
        # A snapshot, because the handler keeps changing the live record.
        live = self.exchange
        ex = replace(
            live,
            request=replace(live.request),
            response=None if live.response is None else replace(live.response),
            ws_messages=list(live.ws_messages),
        )
        self._fill_bodies(ex, LIVE_BODY_PREVIEW)
        self._sink(ex, False)


def _mark_ws_budget_cut(messages: list[WsMessage]) -> None:
    """Mark each cut payload of a session the budget cut (``ws_message`` left its room at -1).

    Done when the record is filled, never per message: a session's payloads are kept in order
    until its body cap or the budget stops them, and then none is kept whole again, so every cut
    one is cut for the one reason, which the budget was when it stopped them before the cap."""
    for message in messages:
        if message.size > len(message.payload):
            message.budget_cut = True


class LiveSnapshots:
    """Submits a snapshot of each exchange still running ``LIVE_AFTER`` seconds after it began.

    One timer for all the exchanges of a tunnel rather than one each: captures wait in the
    order they began, each until it finishes (``ExchangeCapture.finish`` takes it out) or its
    snapshot is taken, whichever comes first, so none is held longer than ``LIVE_AFTER``
    seconds and a finished one not at all. Each tick snapshots those whose time has come.
    """

    def __init__(self) -> None:
        self._waiting: dict[ExchangeCapture, None] = {}
        """The captures waiting, in the order they began (a dict: one in the middle can leave)."""
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        """How many captures wait for their snapshot."""
        return len(self._waiting)

    def add(self, capture: ExchangeCapture) -> None:
        """Watch ``capture`` (just created)."""
        self._waiting[capture] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(LIVE_AFTER, self._tick)

    def watches(self, capture: ExchangeCapture) -> bool:
        """True while ``capture`` waits for its snapshot (none taken yet)."""
        return capture in self._waiting

    def discard(self, capture: ExchangeCapture) -> None:
        """Stop watching ``capture`` (it finished); nothing if it is not watched."""
        self._waiting.pop(capture, None)

    def _tick(self) -> None:
        self._timer = None
        waiting = self._waiting
        now = time.monotonic()
        due: list[ExchangeCapture] = []
        for capture in waiting:
            when = capture._t0 + LIVE_AFTER
            if when > now:
                self._timer = asyncio.get_running_loop().call_later(when - now, self._tick)
                break
            due.append(capture)
        for capture in due:
            del waiting[capture]
            capture._submit_live()

    def close(self) -> None:
        """Stop watching (the tunnel is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting.clear()
