"""Keeps the request table in step with the store: filter results, live ids merged on an interval.

Change notices from ``/api/events`` arrive in bursts (up to thousands of ids a second). They are
collected here and applied to the table on each ``flush`` (the app calls it every 100 ms); with a filter set,
the filtered id list is read again from the store instead (SQLite filters 100k rows quickly,
and the filter may look at bodies the light rows do not carry).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from devtunnel.tui.backend import Backend
from devtunnel.tui.widgets.request_table import RequestTable
from devtunnel.tui.widgets.stats import STATUS_CLASSES, StatsStrip

STATUS_FILTERS = {"2xx": "status:2xx", "3xx": "status:3xx", "4xx": "status:4xx", "5xx": "status:5xx",
                  "errors": "~e"}
"""The filter expression counting each status mix bucket."""


class LiveView:
    """Feeds ``table`` (and ``stats``) from ``backend``.

    Args:
        backend: the store and agent API.
        table: the request table to fill.
        stats: the stats strip to count into.
        run: starts a coroutine as a worker of the app (``App.run_worker``), so it is cancelled
            with the app; exceptions are the caller's to show.
        refilter_every: least seconds between two re-reads of a filtered list under live traffic.
    """

    def __init__(self, backend: Backend, table: RequestTable, stats: StatsStrip,
                 run: Callable[..., object], *, refilter_every: float = 0.5) -> None:
        self.backend = backend
        self.table = table
        self.stats = stats
        self._run = run
        self.refilter_every = refilter_every
        self.filter: object = None
        self.expression = ""
        self._pending: set[str] = set()
        self._stale_filter = False
        self._last_reload = 0.0
        self._reloading = False
        self._mix_stale = True
        self.loaded = asyncio.Event()
        """Set once the first id list is on the table."""

    def set_filter(self, expression: str, compiled: object) -> None:
        """Show only exchanges matching ``compiled`` (None or an empty expression: everything)."""
        self.expression = expression
        self.filter = compiled if expression.strip() else None
        self.reload()

    def reload(self) -> None:
        """Read the whole (filtered) id list from the store again."""
        self._stale_filter = False
        self._reloading = True
        self._run(self._reload(), group="ids", exclusive=True)

    async def _reload(self) -> None:
        try:
            self._last_reload = time.monotonic()
            ids = await self.backend.ids(self.filter)
            self.table.set_ids(ids)
            self.stats.shown = len(self.table.ids)
            self._mix_stale = True
            self.loaded.set()
        finally:
            self._reloading = False

    def changed(self, ids: Iterable[str]) -> None:
        """Note exchanges that were added or updated (applied at the next ``flush``)."""
        self._pending.update(ids)

    def flush(self) -> None:
        """Apply the changes collected since the last flush (call on a short interval)."""
        if self._pending:
            ids, self._pending = self._pending, set()
            self.stats.count_requests(len(ids))
            self._mix_stale = True
            self.table.invalidate(ids)
            if self.filter is None:
                self.table.add_ids(ids)
                self.stats.shown = len(self.table.ids)
            else:
                self._stale_filter = True
        if (self._stale_filter and not self._reloading
                and time.monotonic() - self._last_reload >= self.refilter_every):
            self.reload()

    def refresh_mix(self) -> None:
        """Count the status mix again if captures changed (call every second or two)."""
        if self._mix_stale:
            self._mix_stale = False
            self._run(self._count_mix(), group="mix", exclusive=True)

    async def _count_mix(self) -> None:
        from devtunnel.capture.filters import parse

        mix = {}
        for name in STATUS_CLASSES:
            mix[name] = await self.backend.count(parse(STATUS_FILTERS[name]))
        self.stats.set_mix(mix)
