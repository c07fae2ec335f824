"""Hold: requests wait while the local app is down, instead of failing with 502.

A tunnel whose app devtunnel runs (``--run``), or that has ``--hold``, gets one :class:`HoldGate`.
The forwarder asks it for a local connection only when it has none from the pool; on the fast
path (the app ready, no hold) the gate is one attribute check and one ``connect()``, exactly as
without it.

While the app is known to be down (starting, crashed, restarting) or the target refuses
connections, a request waits, at most ``hold`` seconds and with at most ``max_waiting`` others,
and is delivered once the app is ready, in the order the requests came, at most
``RELEASE_WINDOW`` at a time (see there: not all at once into a small listen backlog). What cannot be delivered
in time raises :class:`HoldExpired` (answered 503 with ``Retry-After``, saying the app's state:
``starting: the app says it listens on ...``). The hold is one for a request, however many times
it waits: a request the app went down with waits again only what its earlier waits left of it,
so what it is recorded held is at most ``hold``, and ``CONNECT_GRACE`` more when its connection to
the app, begun within the hold, is slow to be accepted. An app that will not come back by itself
(it exited with status 0, or could not be started: ``stopped``) holds nothing: requests go to the
target at once, to what a daemonized app left listening there, or are refused with its state
(``APP_STOPPED``). A request that waited only to learn that (it came back unanswered, or was
refused, as the app exited, before its supervisor said so) is not recorded held. Without hold,
the gate only tells the forwarder that a refusal is the app restarting.

A request the app went down with, unanswered, is held again by the forwarder (``forward.py``
says when) and asks for a turn ``again``: it goes ahead of every request that never had one, the
earliest first, and alone (no other request is sent until it has its answer). Sent beside others,
it could not be told from the one that brought the app down; alone, and the first request a run
of the app gets (``sent_in_run``), a crash with it in the app is its own, which the forwarder
counts against it.

A request sent to the tunnel's target from outside the tunnel (a replay the agent API sends)
waits at the same gate, in the same queue, with :meth:`HoldGate.turn`. ``devtunnel replay``, in a
process of its own, waits by the same rule: the agent API says the hold and the app's state, and
:func:`target_listens` asks the target as the gate does.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

__all__ = ["APP_DOWN", "APP_NOT_UP", "APP_RESTARTING", "APP_STOPPED", "CONNECT_GRACE", "CONNECT_TIMEOUT", "MAX_WAITING",
           "NOT_LISTENING", "RELEASE_WINDOW", "RETRY_INTERVAL", "HeldFor", "HoldExpired", "HoldGate", "open_target", "still_down", "still_refused",
           "target_listens"]

MAX_WAITING = 1000
"""Requests one tunnel holds at most; more are answered 503 at once."""
RETRY_INTERVAL = 0.1
"""Seconds between two probes of a target that refuses connections while the app is not known down."""
RELEASE_WINDOW = 4
"""Held requests sent to the app at once when it is back: each next one when one of these has its
answer's head (or failed). The app's supervisor, or a probe, says the app is back when it accepts
one connection: nothing says how many more it takes at once. An app's listen backlog bounds the
connections the kernel completes before the app accepts them; past it, the kernel drops the
connection's SYN and the client tries again after 1 s, then 3 s ... Released all at once, 100
held requests made most of them wait so into a dev server (Python's ``socketserver``, under
``http.server`` and ``wsgiref``, listens with a backlog of 5; Django's runserver 10), or
time out. 4 stays within the smallest backlog in common use, even for an app that answers one
request at a time; the window holds only while held requests are being delivered (a request
that finds none held or being delivered goes at once)."""
APP_RESTARTING = "local app restarting"
"""The reason recorded for requests the app's restart failed (the start of the error message)."""
APP_NOT_UP = "local app not up yet"
"""The start of that reason while the app devtunnel runs has never been ready (a crash at start, a
wrong port): it is not restarting. The error kind stays ``app_restarting`` (a filter, a header)."""
APP_STOPPED = "local app stopped"
"""The start of the reason for a request refused while the app devtunnel runs will not come back by
itself (it exited with status 0, or could not be started): it is not restarting, and nothing holds
the request for it. Its error kind is ``app_stopped``."""
APP_DOWN = "local app down"
"""The start of that reason where it is not known whether the app was ever ready (``still_down``)."""
NOT_LISTENING = (ConnectionRefusedError, ConnectionResetError)
"""What connecting to a target that is not listening raises: refused, or reset. The kernel
completes a connection to a listening socket at once, and queues it for the app to accept; an app
that exits then (a crash, a restart) closes that socket, and the kernel resets what it queued, before
the event loop saw the connection made. Either way the request was never sent: it waits as after
a refusal."""

CONNECT_GRACE = 0.1
"""Seconds past its hold a held request's connection to the app, begun within the hold, may take:
an app on loopback accepts in well under a millisecond, but one whose listen backlog is full has
the kernel drop the connection's SYN, which the client sends again only a second later. Past it
the connection fails as one not accepted in time (``TimeoutError``): a request waits at most its
hold and this."""

CONNECT_TIMEOUT = 10.0
"""Seconds a request from outside the tunnel waits for its target to accept a connection (``open_target``)."""

C = TypeVar("C")


class Held(Protocol):
    """What hears that a request waits for the app (``recording.ExchangeCapture``).

    ``hold_ended(counted=False)``: the wait is not recorded (the request waited only to learn
    that the app will not come back); ``waited``: seconds of its recorded waits that ended."""

    @property
    def waited(self) -> float: ...

    def hold_began(self) -> None: ...

    def hold_ended(self, counted: bool = True) -> None: ...


class HeldFor:
    """A ``Held`` that keeps how long a request waited (``held``: seconds, None if it never did),
    for a request that is not a tunnel's capture (a replay)."""

    def __init__(self) -> None:
        self.held: float | None = None
        self._since: float | None = None

    def hold_began(self) -> None:
        self._since = time.monotonic()

    @property
    def waited(self) -> float:
        return self.held or 0.0

    def hold_ended(self, counted: bool = True) -> None:
        if self._since is not None:
            if counted:
                self.held = (self.held or 0.0) + time.monotonic() - self._since
            self._since = None


def still_down(hold: float, state: str = "", *, came_up: bool | None = True) -> str:
    """What a request held ``hold`` seconds for an app still down is told, with the app's ``state``:
    ``local app restarting: the app is still down after 30 s (starting)``; for an app that has
    never been ready (``came_up`` False) ``local app not up yet: the app has not come up in 30 s
    (starting; its last run exited with code 3)``; when that is not known (``came_up`` None: a
    replay from the command line, told the app's state by the agent API) ``local app down: the
    app is still down after 30 s (restarting (2): exited with code 1)``, true either way."""
    said = f" ({state})" if state else ""
    if came_up is None:
        return f"{APP_DOWN}: the app is still down after {hold:g} s{said}"
    if not came_up:
        return f"{APP_NOT_UP}: the app has not come up in {hold:g} s{said}"
    return f"{APP_RESTARTING}: the app is still down after {hold:g} s{said}"


def still_refused(hold: float) -> str:
    """What a request held ``hold`` seconds is told when the app is not known down but its target
    still refuses connections (a tunnel without ``--run``, or an app said ready that does not listen)."""
    return f"{APP_RESTARTING}: the app still refuses connections after {hold:g} s"


async def open_target(host: str, port: int) -> asyncio.StreamWriter:
    """A connection to a tunnel's target at ``host:port`` for a request from outside the tunnel
    (``HoldGate.turn``), within ``CONNECT_TIMEOUT``.

    Raises:
        ConnectionRefusedError, ConnectionResetError: nothing listens there (``NOT_LISTENING``):
            the request is held.
        OSError: any other failure, ``TimeoutError`` included: nothing is held for it.
    """
    async with asyncio.timeout(CONNECT_TIMEOUT):
        _, writer = await asyncio.open_connection(host, port)
    return writer


async def target_listens(host: str, port: int) -> bool:
    """Whether the target at ``host:port`` accepts a connection, asked as the gate asks it for a
    request from outside the tunnel (``open_target``; the connection is closed at once): False
    when nothing listens there, where the gate holds the request and asks again every
    ``RETRY_INTERVAL``, at most the hold.

    Raises:
        OSError: as ``open_target``: a failure the gate holds nothing for.
    """
    try:
        writer = await open_target(host, port)
    except NOT_LISTENING:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class HoldExpired(Exception):
    """A held request could not be delivered in time (or the queue was full).

    ``str(exc)`` is the reason recorded; ``public`` the text its client is answered, without
    what the app wrote (``HoldGate.app_state_public``)."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = message if public is None else public


class HoldGate:
    """What the forwarder knows about the app behind a tunnel, and the queue of held requests.

    Args:
        hold: seconds a request may wait for the app (0: no waiting).
        max_waiting: requests held at once at most.
        retry_interval: seconds between attempts while the target refuses connections.
        release_window: held requests delivered at once at most (``RELEASE_WINDOW``).
    """

    def __init__(self, hold: float = 0.0, *, max_waiting: int = MAX_WAITING,
                 retry_interval: float = RETRY_INTERVAL, release_window: int = RELEASE_WINDOW) -> None:
        self.hold = hold
        self.max_waiting = max_waiting
        self.retry_interval = retry_interval
        self.release_window = max(1, release_window)
        self.delivering = 0
        """Held requests given their turn to be sent and not answered yet (at most ``release_window``)."""
        self._sent: set[object] = set()
        """The connections of the requests counted in ``delivering`` that were sent, until ``answered``."""
        self._turns: deque[asyncio.Future[None]] = deque()
        """Held requests waiting for their turn, in the order they came."""
        self._again: list[tuple[float, int, asyncio.Future[None]]] = []
        """Requests held again after the app went down with them, waiting for a turn alone: by
        when each first came (then in the order they asked), served before ``_turns``."""
        self._asked = 0
        self._held_again = 0
        """Requests held again in ``connect`` (in ``_again``, or waiting for the app before they
        ask): while there are, those that never had a turn wait for theirs."""
        self.alone = False
        """A request held again is being sent alone: no other turn is given until its answer."""
        self._turn_ended = -math.inf
        """When the last turn ended (``loop.time()``): a request held again goes a moment after."""
        self.waiting = 0
        """Requests held right now."""
        self.on_waiting: Callable[[], None] | None = None
        """Called each time ``waiting`` changes (a request held, or let go): the tunnel tells its
        subscribers, merging a burst. Never called while nothing is held (the fast path)."""
        self.held = 0
        """Requests that waited and were delivered."""
        self.expired = 0
        """Requests that waited and were answered 503."""
        self.managed = False
        """True when devtunnel runs the app: a refused connection then means it is going down."""
        self.starts = 0
        """How many times the app became ready: which run of it a request was sent to."""
        self.sent_in_run = 0
        """Connections made through the gate to the app's run ``starts``: 1 just after a request
        held again connects, when it is the first its run gets (see ``connect``)."""
        self.app_state = ""
        """The app's state in words (``starting``, ``restarting (2): exited with code 1: ...``), for
        what is recorded; it may quote the app's output."""
        self.app_state_public = ""
        """The app's state in devtunnel's words alone, for what public clients are answered."""
        self._up = asyncio.Event()
        self._up.set()
        self._reachable = asyncio.Event()
        self._reachable.set()
        self._probe: asyncio.Task[None] | None = None
        self._ended = ""
        """Why requests are held no more (``end_holding``): the tunnel is stopping."""
        self._final = False
        """The app will not come back by itself (``exited``, ``failed``): nothing to wait for."""
        self._downs = 0
        """How many times the supervisor said the app down and coming back (starting, crashed,
        restarting): a wait that saw none before the app stopped for good was not for it."""

    @property
    def down_words(self) -> str:
        """How a reason for a request the app did not take starts: ``local app restarting``, or
        ``local app not up yet`` while the app devtunnel runs has never been ready."""
        return APP_NOT_UP if self.managed and not self.starts else APP_RESTARTING

    @property
    def stopped(self) -> bool:
        """True while the app devtunnel runs will not come back by itself (it exited with status 0,
        or could not be started): its requests are not held, and a refusal says it stopped."""
        return self._final

    @property
    def app_down(self) -> bool:
        """True while the app is known not to be ready (starting, crashed, restarting, exited ...)."""
        return self._final or not self._up.is_set()

    def set_app_state(self, ready: bool, state: str = "", *, public: str | None = None, final: bool = False) -> None:
        """Called by the app's supervisor on every change; ready releases the held requests in order.

        ``final``: the app is down and will not come back by itself (it exited with status 0, or
        could not be started): what is held, and what comes, is sent to the target at once
        (a daemonized app's server may answer there) instead of waiting out the hold for nothing.
        ``public``: ``state`` without what the app wrote (``values.app_state.app_state_public``),
        for public clients; ``state`` itself when not given."""
        self.managed = True
        self.app_state = state
        self.app_state_public = state if public is None else public
        self._final = final
        if final:
            self._reachable.set()
            self._up.set()  # wakes every waiter; each sees ``_final``
            self._give_every_turn()
        elif ready:
            if not self._up.is_set():
                self.starts += 1
                self.sent_in_run = 0
            self._reachable.set()  # the supervisor's word is newer than a probe's
            self._up.set()
        else:
            self._downs += 1
            self._up.clear()

    @property
    def retry_after(self) -> int:
        """Seconds a client is told to wait before trying again (``Retry-After``)."""
        return max(1, min(60, math.ceil(self.hold or 5)))

    async def connect(self, connect: Callable[[], Awaitable[C]], held: Held | None = None, *,
                      until_answered: bool = False, again: float | None = None) -> C:
        """A connection from ``connect()``, waiting for the app as the module describes.

        ``held`` hears when the request begins to wait and when it waits no more (the record
        says it is held, and for how long); a request that does not wait tells it nothing.

        Held requests wait on one event, set when the app's supervisor says it is ready or
        when one probe finds the target accepting again: they are woken in the order they came,
        and take turns to connect, ``release_window`` at a time. A turn ends once connected, or
        with ``until_answered`` when the caller says the request has its answer (``answered``):
        until then the app may not have accepted the connection. A request refused in its
        turn (the app went down again) waits again, as it waited before.

        ``again``: a request the app went down with, held again; when the app first dropped it
        (``loop.time()``). It is held even when nothing else is, and takes its turn alone and
        ahead of those that never had one, the earliest dropped first (the module says why), once
        ``retry_interval`` has passed since the last turn ended, and since it asked (it was just
        dropped): an app that exits after an answer (a crash on a count, a reload), or with this
        request in it, is then seen down, and the request waits for its next run instead of
        reaching it as it dies (or, the app stopped for good, is not recorded held).

        Raises:
            HoldExpired: held for ``hold`` seconds without success (in all: ``held.waited`` counts
                the request's earlier waits), or too many held already.
            ConnectionRefusedError, ConnectionResetError, OSError, TimeoutError: from ``connect()`` when
                not holding (``NOT_LISTENING`` are the two a dying app gives); ``TimeoutError`` too
                when a held request's connection is not accepted ``CONNECT_GRACE`` past its hold.
        """
        if self.hold <= 0 or self._ended or self._final:
            return await connect()
        if again is not None:
            pass  # held, as below, whatever else is
        elif self._open() and not self.waiting and not self.delivering:
            try:
                conn = await connect()
            except NOT_LISTENING:
                self.refused(connect)
            else:
                self.sent_in_run += 1
                return conn
        elif self._open() and not self.waiting and self.delivering < self.release_window and not self.alone:
            # Held requests are being delivered, a turn is free and none waits for one: this
            # request waits for nothing, but takes its turn (the app's backlog is theirs too).
            self.delivering += 1
            try:
                return await self._in_turn(connect, until_answered)
            except NOT_LISTENING:
                self.refused(connect)
        if self.waiting >= self.max_waiting:
            self.expired += 1
            raise HoldExpired(f"{APP_RESTARTING}: {self.waiting} requests are already waiting for it")
        loop = asyncio.get_running_loop()
        asked = loop.time()
        # One hold a request: held again (the app went down with it), it waits what is left.
        deadline = loop.time() + self.hold - (held.waited if held is not None else 0.0)
        busy = False  # the hold ran out while the request waited for its turn (the app back, but slow)
        stopped = False  # the app stopped for good while the request waited: it goes at once
        downs = self._downs if self._up.is_set() else -1  # (-1: the app is down already, coming back)
        self.waiting += 1
        if again is not None:
            self._held_again += 1
        if self.on_waiting is not None:
            self.on_waiting()
        if held is not None:
            held.hold_began()
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0 or self._ended:
                    break
                if self._final:
                    stopped = True
                    break
                if not self._open():
                    try:
                        async with asyncio.timeout(remaining):
                            await self._up.wait()
                            await self._reachable.wait()
                    except TimeoutError:
                        break
                    continue  # both may have changed again meanwhile
                if not await self._turn(remaining, again):
                    busy = True
                    break
                if not self._open() or self._ended or self._final:
                    self._end_turn()  # down again while this request waited for its turn
                    continue
                settle = max(self._turn_ended, asked) + self.retry_interval - loop.time() if again is not None else 0.0
                if settle > 0:
                    try:
                        await asyncio.sleep(min(settle, remaining))
                    except BaseException:
                        self._end_turn()
                        raise
                    if not self._open() or self._ended or self._final or loop.time() >= deadline:
                        # The app went down after its last answer (not with this request), or the hold ran out.
                        self._end_turn()
                        continue
                try:
                    # Begun within the hold, the connection may take CONNECT_GRACE past it, no more.
                    async with asyncio.timeout(max(0.0, deadline - loop.time()) + CONNECT_GRACE):
                        conn = await self._in_turn(connect, until_answered)
                except NOT_LISTENING:
                    self.refused(connect)  # back to waiting, as before its turn
                    continue
                self.held += 1
                return conn
        finally:
            if held is not None:
                # A request that came back unanswered, or was refused, as the app exited for good
                # waited only to learn so: it was not held for the app (not held for an app that
                # stopped), unless the app was said down and coming back meanwhile.
                held.hold_ended(not stopped or downs != self._downs)
            self.waiting -= 1
            if again is not None:
                self._held_again -= 1
                self._hand_on()  # (it leaves without a turn: those it kept waiting may go)
            if not self.waiting and self._probe is not None:
                self._probe.cancel()
            if self.on_waiting is not None:
                self.on_waiting()
        if stopped:
            return await connect()  # a refusal says the app stopped (the forwarder's 502)
        self.expired += 1
        if self._ended:
            raise HoldExpired(f"{APP_RESTARTING}: {self._ended}")
        if busy:
            raise HoldExpired(f"{APP_RESTARTING}: the app is back, but did not answer the requests held before this"
                              f" one within {self.hold:g} s (they are sent {self.release_window} at a time)")
        if not self.app_down:
            raise HoldExpired(still_refused(self.hold))
        # Its state says why (``starting: the app says it listens on ...``, a crash's last line).
        came_up = self.down_words == APP_RESTARTING
        raise HoldExpired(still_down(self.hold, self.app_state, came_up=came_up),
                          still_down(self.hold, self.app_state_public, came_up=came_up))

    @contextlib.asynccontextmanager
    async def turn(self, host: str, port: int, held: Held | None = None) -> AsyncIterator[None]:
        """Wait as a request of the tunnel does (``connect``) before one request from outside it
        (a replay of one of its requests) is sent to its target at ``host:port``; the block sends
        it, and its turn ends with the block (it has its answer's head, or failed).

        The gate is asked for a connection that is closed at once: the request goes on its
        sender's own. A target refusing it while the tunnel holds is probed, and the request held,
        as a tunnel's request is. Where the tunnel holds nothing (no hold, an app that will not
        come back) a refusal is left to the sender, which fails as it does without a gate.

        Raises:
            HoldExpired: as ``connect``; nothing was sent.
        """
        async def connect() -> asyncio.StreamWriter:
            return await open_target(host, port)  # (TimeoutError is an OSError: left to the sender)

        conn: asyncio.StreamWriter | None
        try:
            conn = await self.connect(connect, held, until_answered=True)
        except OSError:
            conn = None  # not held: the sender's own connection says why
        if conn is None:
            yield
            return
        conn.close()
        try:
            yield
        finally:
            self.answered(conn)

    async def _turn(self, remaining: float, again: float | None = None) -> bool:
        """Wait for a turn to be sent (``delivering`` counts it), in the order the requests came
        (``again``: alone, ahead of them, see ``connect``); False if ``remaining`` seconds pass first."""
        if (again is None and not self.alone and self.delivering < self.release_window and not self._turns
                and not self._held_again):
            self.delivering += 1
            return True
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        if again is None:
            self._turns.append(turn)
        else:
            self._asked += 1
            bisect.insort(self._again, (again, self._asked, turn))  # (``_asked`` differs: futures never compared)
            # Handed on once the requests woken with this one asked too: the earliest dropped goes first.
            loop.call_soon(self._hand_on)
        try:
            async with asyncio.timeout(remaining):
                await turn
        except BaseException as exc:  # timed out, or cancelled (the client went away)
            if turn.done() and not turn.cancelled():
                self._end_turn()  # given as it went: to the next one
            else:
                turn.cancel()  # _end_turn skips it
            if isinstance(exc, TimeoutError):
                return False
            raise
        return True

    async def _in_turn(self, connect: Callable[[], Awaitable[C]], until_answered: bool) -> C:
        """``connect()`` in a turn taken: the turn ends with a failure, once connected, or with
        ``until_answered`` when ``answered`` hears of the connection."""
        try:
            conn = await connect()
        except BaseException:
            self._end_turn()
            raise
        self.sent_in_run += 1
        if until_answered:
            self._sent.add(conn)
        else:
            self._end_turn()
        return conn

    def answered(self, conn: object) -> None:
        """The request sent on ``conn`` has its answer's head, or failed: its turn, if it had one,
        goes to the next held request. Called for every request of a tunnel with a gate; one
        test of an empty set when no held request is being delivered."""
        if self._sent and conn in self._sent:
            self._sent.discard(conn)
            self._end_turn()

    def _give_every_turn(self) -> None:
        """Wake every request waiting for its turn: none is sent in it (the tunnel stops, or the
        app will not come back), each gives it back and goes the way the module says."""
        turns = [turn for _, _, turn in self._again] + list(self._turns)
        self._again.clear()
        self._turns.clear()
        for turn in turns:
            if not turn.done():
                turn.set_result(None)
                self.delivering += 1

    def _end_turn(self) -> None:
        self.delivering -= 1
        self._turn_ended = asyncio.get_running_loop().time()
        if not self.delivering:
            self.alone = False
        self._hand_on()

    def _hand_on(self) -> None:
        """Give the turns that are free: to a request held again, alone, once none is being
        sent, else to those that never had one, up to ``release_window``."""
        while not self.alone:
            while self._again and self._again[0][2].done():
                self._again.pop(0)  # its client went away, or its hold ran out
            if self._again:
                if self.delivering:
                    return  # a turn alone waits for the app to have none of ours
                turn = self._again.pop(0)[2]
                if not turn.done():
                    turn.set_result(None)
                    self.delivering += 1
                    self.alone = True
            elif self._held_again:
                return  # held again, and waiting for the app before asking for a turn
            elif self._turns and self.delivering < self.release_window:
                turn = self._turns.popleft()
                if not turn.done():
                    turn.set_result(None)
                    self.delivering += 1
            else:
                return

    def end_holding(self, reason: str) -> None:
        """Answer the held requests now (503, ``reason``) and hold no more: the tunnel is stopping,
        and its app with it, so they would wait out the hold for nothing and be cut."""
        self._ended = reason
        self._up.set()  # wakes every waiter; each sees ``_ended`` first
        self._reachable.set()
        self._give_every_turn()

    def _open(self) -> bool:
        return self._up.is_set() and self._reachable.is_set()

    def refused(self, connect: Callable[[], Awaitable[object]]) -> None:
        """The target refused while the app is not known down (or reset a connection before reading
        the request: the forwarder says so): one probe finds when it accepts again."""
        self._reachable.clear()
        if self._probe is None:
            self._probe = asyncio.create_task(self._run_probe(connect), name="hold-probe")

    async def _run_probe(self, connect: Callable[[], Awaitable[object]]) -> None:
        try:
            while True:
                await asyncio.sleep(self.retry_interval)
                try:
                    conn = await connect()
                except (OSError, TimeoutError):
                    continue
                abort = getattr(conn, "abort", None) or getattr(conn, "close", None)  # a socket's close
                if abort is not None:
                    abort()
                return
        finally:
            self._probe = None
            self._reachable.set()

    def close(self) -> None:
        """Stop probing (the tunnel stops)."""
        if self._probe is not None:
            self._probe.cancel()
