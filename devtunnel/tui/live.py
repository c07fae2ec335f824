"""Keeps the request table in step with the store: filter results, live changes merged per frame.

The table reads its own pages (``Backend.pages``); this module gives it the filter's source and
the number of rows, an estimate first and the exact count from a worker afterwards. Change
notices from ``/api/events`` arrive in bursts (up to thousands of ids a second): they are
collected and applied on each ``flush`` (the app calls it on a short interval) with one store
read of just those exchanges, filter applied; the whole list is never read again. Others hear
of the same notices through ``LiveView.listen`` (the detail of an exchange in flight).

Counting over a large store is the one cost that grows with it, so every count (the exact
count of a filtered list, the status mix) is spaced by twenty times what the last one took: at
most a twentieth of a reader thread's time, whatever the store's size.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from functools import partial

from devtunnel.capture.rows import Row
from devtunnel.errors import DevtunnelError, FilterTimeoutError
from devtunnel.tui.backend import Backend
from devtunnel.tui.widgets.request_table import EmptySource, RequestTable
from devtunnel.tui.widgets.stats import STATUS_CLASSES, StatsStrip

STATUS_FILTERS = {"1xx": "status:1xx !~e", "2xx": "status:2xx !~e", "3xx": "status:3xx !~e", "4xx": "status:4xx !~e",
                  "5xx": "status:5xx !~e", "errors": "~e", "pending": "~q !~e"}
"""The filter expression counting each status mix bucket (``STATUS_CLASSES``), counted among the
rows the table shows: each of them is in one bucket. An exchange that ended in an error is in
``errors`` whatever its status (a 502 the agent answered for a service that refused, a 200 whose
body broke off); a WebSocket's ``101`` is in ``1xx``; one with no response yet in ``pending``."""

FRAME = 1 / 10
"""Least time between two applications of live changes: what arrives meanwhile is applied
together (one read, one redraw). A change after a quiet spell is applied at once."""

COUNT_SHARE = 20
"""A count runs again no sooner than this many times its last duration after it."""

COUNTED_KEPT = 32_768
"""Ids the request rate remembers having counted: past it the older half is forgotten, and an id
that old is counted no more. A request is first announced as it ends or half a second after it
began (the agent's live snapshot), so it is counted long before that many newer ones are."""

IN_FLIGHT_RECHECK = 3.0
"""Seconds a row stays in flight before ``recheck_in_flight`` reads it again (every two seconds)."""

Listener = Callable[[Collection[str] | None], None]
"""Hears the ids a change notice names, or None when anything may have changed (a resync)."""


class _Spaced:
    """When a repeated costly read may run again: ``COUNT_SHARE`` times its last duration later."""

    def __init__(self, least: float) -> None:
        self.least = least
        self.next_at = 0.0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def running(self) -> bool:
        return not self._idle.is_set()

    @running.setter
    def running(self, value: bool) -> None:
        if value:
            self._idle.clear()
        else:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no read of this kind runs (at once if none does)."""
        await self._idle.wait()

    def due(self) -> bool:
        return not self.running and time.monotonic() >= self.next_at

    def ran(self, started: float) -> None:
        now = time.monotonic()
        self.next_at = now + max(self.least, COUNT_SHARE * (now - started))


class LiveView:
    """Feeds ``table`` (and ``stats``) from ``backend``.

    Args:
        backend: the store and agent API.
        table: the request table to fill.
        stats: the stats strip to count into.
        run: starts an async function (called with no arguments) as a worker of the app
            (``App.run_worker``), so it is cancelled with the app. A function, never a coroutine
            object: a worker cancelled before it starts (a newer one of its group, or the app
            quitting) would leave that coroutine never awaited. Each is started with
            ``exit_on_error=False``: a store that is locked, corrupt or gone is said here (one
            notice until a read succeeds again; the last rows stay on the table and the list is
            read again by ``watch_store`` and with the next change); any other exception is the
            caller's to show (``tell_failure``), and never closes the inspector.
        later: calls a function after a delay (``App.set_timer``); without it, changes wait for
            the caller's next ``flush``.
        refilter_every: least seconds between two exact counts of a filtered list under live traffic.
    """

    def __init__(self, backend: Backend, table: RequestTable, stats: StatsStrip,
                 run: Callable[..., object], *, later: Callable[[float, Callable[[], None]], object] | None = None,
                 refilter_every: float = 0.5) -> None:
        self.backend = backend
        self.table = table
        self.stats = stats
        self._run = run
        self._later = later
        self._flush_due = False
        self._applied_at = 0.0
        self.refilter_every = refilter_every
        self.filter: object = None
        self.expression = ""
        self._pending: set[str] = set()
        self._rechecks: set[str] = set()
        """Ids read again though no notice named them (``recheck_in_flight``), with the next flush."""
        self._stored: int | None = None
        """The store's count at the last look of ``_count_outside`` (None: not looked yet)."""
        self._version: int | None = None
        """The store's change number at that look (``Backend.look``)."""
        self._counted: set[str] = set()
        """The ids the stats strip's rate counted (the newest ``COUNTED_KEPT`` at most)."""
        self._forgotten_up_to = ""
        """The newest id forgotten from ``_counted``: ids up to it are not counted again."""
        self._unnamed: list[tuple[int, list[str]]] = []
        """Requests counted by the rate whose tunnels are still to be named: ``(second, ids)``."""
        self._applying = False
        self._generation = 0
        self._count = _Spaced(refilter_every)
        self._count_stale = False
        self._mix = _Spaced(1.0)
        self._outside = _Spaced(1.0)
        self._sourced = -1
        self._exact: tuple[int, int] | None = None
        self._changes = 0
        self._mix_stale = True
        self._retry = False
        """The last list read failed: the next change reads it again."""
        self._retry_soon = False
        """The last list read failed on the store (locked, say): ``watch_store`` reads it again
        without waiting for a change. (An error nobody foresaw waits for one: it is said each time.)"""
        self._failing = False
        """A read of the store failed and was said; no read has succeeded since."""
        self.loaded = asyncio.Event()
        """Set once the first list is on the table."""
        self._listeners: list[Listener] = []
        self.heard = 0
        """How many change notices came so far (whoever they named): a reader compares it before
        and after a read to know whether one may have come meanwhile, before it listened."""

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Tell ``listener`` of each change notice as it comes (not merged per frame); returns
        the function that stops it."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    def _tell(self, ids: Collection[str] | None) -> None:
        self.heard += 1
        for listener in list(self._listeners):
            listener(ids)

    def resync(self) -> None:
        """Anything may have changed (the agent's feed was down, or too much changed to list):
        read the list again, and tell the listeners so."""
        self._tell(None)
        self.reload()

    def set_filter(self, expression: str, compiled: object) -> None:
        """Show only exchanges matching ``compiled`` (None or an empty expression: everything)."""
        self.expression = expression
        self.filter = compiled if expression.strip() else None
        self.reload()

    def reload(self) -> None:
        """Give the table the (filtered) list again, as the store has it now."""
        self._generation += 1
        self._retry = self._retry_soon = False
        self._run(partial(self._reload, self._generation), group="ids", exclusive=True, exit_on_error=False)

    async def _reload(self, generation: int) -> None:
        try:
            await self._read_list(generation)
        except DevtunnelError as exc:
            # The store is locked, corrupt or gone: the last rows stay, and the next change reads again.
            if generation == self._generation:
                self._retry = self._retry_soon = True
                self.cannot_read(exc)
        except Exception:
            if generation == self._generation:
                self._retry = True
            raise  # an error we did not foresee: the app says it (``tell_failure``)

    def watch_store(self) -> None:
        """Follow the database file, and read the list again after it failed (call every second or so).

        Another file at the path (an agent made a new one) is said once and its list is shown;
        a deleted file is said once and its rows stay (the file stays open; an agent still
        running makes a new one at the path within about a second). A list that could not be read (the store
        locked by another process, say) is read again without waiting for a change, so the
        inspector recovers on its own when the lock is let go.
        """
        change = self.backend.file_change()
        path = self.backend.db_path
        if change == "deleted":
            self.table.notify(f"{path} was moved or deleted. The captures shown are still read from that file; "
                              "a running agent makes a new one there within about a second, shown as soon "
                              "as it appears.", title="Capture database moved or deleted", severity="warning",
                              timeout=15)
        elif change is not None:
            if change == "replaced":
                self.table.notify(f"{path} is another file now: showing its captures.",
                                  title="Capture database replaced", severity="warning", timeout=10)
            self._failing = False  # a failure to read the new file is said anew
            self._tell(None)
            self.reload()
        elif self._retry_soon:
            self.reload()
        elif self._sourced == self._generation and not self._pending and not self._applying and self._outside.due():
            self._outside.running = True
            self._run(partial(self._count_outside, self._generation), group="outside", exclusive=True,
                      exit_on_error=False)

    def recheck_in_flight(self, older_than: float = IN_FLIGHT_RECHECK) -> None:
        """Read again the rows on the table that are still in flight and began over ``older_than``
        seconds ago (call every second or two).

        Whoever ends them may announce nothing here: ``devtunnel inspect`` follows no agent, and an
        agent killed mid-request says nothing more; the store ends its exchanges as ``agent_gone``
        when a read finds it gone (``Store.end_gone_runs``). Those rows stayed ``…`` until the list
        was read again. The young are left to the notices: under traffic they end within a second.
        """
        now = time.time()
        ids = {row.id for row in self.table.window if row.duration is None and row.started_at < now - older_than}
        ids -= self._pending
        if ids:
            self._rechecks.update(ids)  # not traffic: the request rate does not count them
            if self._later is not None and not self._flush_due and not self._applying:
                self._flush_soon()

    def _start_apply(self, ids: list[str], generation: int) -> None:
        """Apply ``ids`` (announced; none for rows stored elsewhere) to the table in a worker."""
        self._mix_stale = True
        self._applying = True
        self._applied_at = time.monotonic()
        self._run(partial(self._apply, ids, generation), group="live", exit_on_error=False)

    async def _count_outside(self, generation: int) -> None:
        """Count the store and apply the difference, if any, as a change (a filtered list: read its
        end again when anything changed).

        What another process stores is never announced by the agent: ``devtunnel replay`` from
        the CLI records its replay itself, and ``devtunnel inspect`` follows no agent. Counted now
        and then (spaced as the other counts), such a row shows within about a second even when
        no traffic follows it, with a filter too (it stayed away until the filter changed), and
        so does a row that comes to match only as it ends (``status:>=400`` and a slow request
        ending in a 504: the count does not move, the store's change number does).
        """
        started = time.monotonic()
        first_match = False
        try:
            total, version = await self.backend.look()
            changed = self._version is not None and version != self._version
            grew = self._stored is not None and total != self._stored
            self._stored, self._version = total, version
            if (changed or grew) and self.filter is not None and not self.table.total:
                # An empty filtered list has no end to read after: a look for its first row (a
                # scan when nothing matches, hence inside this spaced read).
                first_match = bool((await self.backend.pages(self.filter).newest(1))[0])
        except DevtunnelError:
            return  # the next read says it, if it lasts
        finally:
            self._outside.running = False
            self._outside.ran(started)
        if generation != self._generation or self._sourced != generation or self._pending or self._applying:
            return
        if self.filter is None:
            if total != self.table.total:
                self._start_apply([], generation)
        elif first_match:
            self.reload()
        elif changed or grew:
            # A filtered list cannot be told by the store's count: its end is read again, and
            # rows that match after its last show (those of ``devtunnel inspect`` beside an agent).
            self.table.read_end()

    def cannot_read(self, exc: Exception) -> None:
        """Say that the store could not be read, once until a read succeeds again (retries under
        traffic run up to ten times a second, and SQLite words one broken file several ways).
        The table's own page reads say their failures here too (``RequestTable.read_failed``)."""
        if not self._failing:
            self._failing = True
            self.table.notify(str(exc), title="Could not read captures", severity="error", timeout=10)

    def _read_ok(self) -> None:
        self._failing = False

    async def _read_list(self, generation: int) -> None:
        flt = self.filter
        if flt is not None:
            # The exact count takes longest: it starts now, beside the first look below.
            self._count_stale = True
            self._count.next_at = 0.0
            self._count.running = False  # a count of the former list is cancelled (same group)
            self._count_if_due()
        tail = self.table.tail_rows()
        try:
            # The store as it is before the list is read: what changes after it is seen by the
            # next look (``_count_outside``), however soon (the first look of a list compared
            # nothing, and a match stored before it was never shown on an empty filtered list).
            self._stored, self._version = await self.backend.look()
        except DevtunnelError:
            self._stored = self._version = None
        # The newest rows come with the count: a table that follows shows them without another read.
        try:
            total, exact, rows = await self.backend.open_list(flt, tail)
        except FilterTimeoutError as exc:
            # The filter's regex was stopped: show no rows rather than the last list under a filter
            # it does not answer to, and read nothing more with it (changes and counts wait for
            # the next filter).
            if generation == self._generation:
                self._count_stale = False
                self.table.set_source(EmptySource(), 0)
                self.stats.shown = 0
                self.table.notify(str(exc), title="Filter stopped", severity="error", timeout=10, markup=False)
                self.loaded.set()
            return
        self._read_ok()
        if generation != self._generation:
            return
        self.table.set_source(self.backend.pages(flt), total, exact=exact, tail=(rows, tail))
        self._sourced = generation
        self.stats.shown = self.table.total
        self._show_exact()
        if self._pending and self._later is not None and not self._flush_due and not self._applying:
            self._flush_soon()
        self._mix_stale = True
        self.loaded.set()

    def _count_if_due(self) -> None:
        if self._count_stale and self._count.due():
            self._count_stale = False
            self._count.running = True
            self._run(partial(self._count_exact, self._generation), group="count", exclusive=True, exit_on_error=False)

    async def _count_exact(self, generation: int) -> None:
        started = time.monotonic()
        changes = self._changes
        try:
            total = await self.backend.count(self.filter)
        except FilterTimeoutError:
            return  # the list says so (``_reload``); counting again would only take as long again
        except DevtunnelError:
            self._count_stale = True  # the estimate stays; counted again later
            return
        finally:
            self._count.running = False
            self._count.ran(started)
        if generation == self._generation:
            if changes != self._changes:
                self._count_stale = True  # changes were applied while it counted: count again later
            self._exact = (generation, total)
            self._show_exact()

    def _show_exact(self) -> None:
        """Give the table the exact count once both it and the list it counts are there."""
        if self._exact is not None and self._exact[0] == self._sourced == self._generation:
            self.table.set_total(self._exact[1], exact=True)
            self.stats.shown = self.table.total
            self._exact = None

    def changed(self, ids: Iterable[str]) -> None:
        """Note exchanges that were added or updated (applied a frame later, with any others by then).

        If the list could not be read last time, it is read again now (the changes with it).
        """
        named = set(ids)
        self._tell(named)
        self._pending.update(named)
        if self._retry:
            self.reload()
            return
        if self._later is not None and not self._flush_due and not self._applying:
            self._flush_soon()

    def flush(self) -> None:
        """Apply the changes collected since the last flush (also call on an interval, as a safety net)."""
        self._flush_due = False
        if (self._pending or self._rechecks) and not self._applying and self._sourced == self._generation:
            ids, self._pending = self._pending, set()
            fresh = self._first_heard(ids)
            if fresh:
                # Counted now, in the second they came; their tunnels are named once read (``_apply``).
                self._unnamed.append((self.stats.count_requests(len(fresh)), fresh))
            ids |= self._rechecks
            self._rechecks = set()
            self._start_apply(sorted(ids), self._generation)
        self._count_if_due()

    def _first_heard(self, ids: Iterable[str]) -> list[str]:
        """The ids among ``ids`` heard of for the first time, now remembered as counted.

        A request is announced when it ends, and one still running half a second after it began
        is announced then too (the agent's live snapshot): one request, counted once. Ids are
        remembered one by one, not as the newest so far: a slow request is first announced after
        a quick one that began later and ended first (both in flight together), and the newest id
        counted would have left it out.
        """
        fresh = [i for i in ids if i > self._forgotten_up_to and i not in self._counted]
        self._counted.update(fresh)
        if len(self._counted) > COUNTED_KEPT:
            kept = sorted(self._counted)
            cut = len(kept) - COUNTED_KEPT // 2
            self._forgotten_up_to = kept[cut - 1]
            self._counted = set(kept[cut:])
        return fresh

    async def _apply(self, ids: list[str], generation: int) -> None:
        try:
            try:
                rows, total = await self.backend.changed_rows(ids, self.filter)
            except DevtunnelError as exc:  # say it, and try these again with the next changes
                self._pending.update(ids)
                self.cannot_read(exc)
                return
            self._read_ok()
            if generation != self._generation or self._sourced != generation:
                # A new list is being read: its first look may predate these, so they are
                # applied to it once it is on the table.
                self._pending.update(ids)
                return
            self._changes += 1
            if not self.table.apply_changes(rows, ids, total):
                self._count_stale = True
            self.stats.shown = self.table.total
            await self._name_tunnels(rows)
        finally:
            self._applying = False
            if self._pending and self._later is not None and not self._flush_due:
                self._flush_soon()  # what arrived during this read

    async def _name_tunnels(self, rows: Sequence[Row]) -> None:
        """Name the tunnels of the requests the rate counted, from ``rows`` just read, or, for those
        a filter left out, from their own rows: the tunnels panel's rates are the same count."""
        unnamed, self._unnamed = self._unnamed, []
        read = {row.id: row for row in rows}
        missing = [i for _, ids in unnamed for i in ids if i not in read]
        if missing and self.filter is not None:
            try:
                read.update((row.id, row) for row in await self.backend.rows(missing))
            except DevtunnelError:
                pass  # counted all the same, of no tunnel; the read's failure is said by the next
        for second, ids in unnamed:
            # A replay did not come through the tunnel: the agent does not count it
            # (``metrics.http.count``), and neither do the rates.
            replays = sum(1 for i in ids if i in read and read[i].replay_of)
            self.stats.rate.attribute(second, Counter(read[i].tunnel for i in ids if i in read and not read[i].replay_of),
                                      dropped=replays)

    def _flush_soon(self) -> None:
        """Flush a frame after the last application began (at once if that is past)."""
        assert self._later is not None
        self._flush_due = True
        delay = self._applied_at + FRAME - time.monotonic()
        if delay > 0:
            self._later(delay, self.flush)
        else:
            asyncio.get_running_loop().call_soon(self.flush)

    def refresh_mix(self) -> None:
        """Count the status mix again if captures changed (call every second or two)."""
        # The count a user waits on (a filter's) goes first.
        if self._mix_stale and self._mix.due() and not self._count.running:
            self._mix_stale = False
            self._mix.running = True
            self._run(self._count_mix, group="mix", exclusive=True, exit_on_error=False)

    async def _count_mix(self) -> None:
        from devtunnel.capture.filters import parse
        from devtunnel.capture.filters.base import And

        started = time.monotonic()
        generation, shown = self._generation, self.filter
        try:
            mix = {}
            for name in STATUS_CLASSES:
                while self._count.running:  # a filter's count, which someone waits on, goes first
                    await self._count.idle()
                bucket = parse(STATUS_FILTERS[name])
                # Among the rows shown: the buckets add up to the table's count.
                mix[name] = await self.backend.count(bucket if shown is None else And([shown, bucket]))  # type: ignore[list-item]
        except FilterTimeoutError:
            return  # the list says so (``_reload``); the mix of that filter is not counted
        except DevtunnelError as exc:
            self._mix_stale = True  # the last mix stays; counted again later (spaced as ever)
            self.cannot_read(exc)
            return
        finally:
            self._mix.running = False
            self._mix.ran(started)
        if generation != self._generation:
            self._mix_stale = True  # another list since: counted again for it
            return
        self.stats.set_mix(mix)
