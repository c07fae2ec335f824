"""The live request table: a virtual Line API view over a window of a large, ordered list.

The table knows how many rows there are (``total``) and holds only a window of them (a few
screens' worth, at most ``WINDOW_ROWS``) plus an LRU of rendered lines. It reads rows from its
``RowSource`` by keyset in the id (ULID) order: the next page after the window's last id, the
one before its first, or, for a jump (home, end, a scrollbar drag), a page counted from the
nearer end. So its cost grows with the screen, never with the store. Nothing captured is ever
parsed as markup, and control characters are shown as visible escapes. How rows are drawn is
``table_rows`` (columns, cells, ``RowPainter``).

Longer than our ~500 lines on purpose: the window (which rows are held), the count, the cursor
and following are one state machine, changed together by every key, scroll, page read and live
batch; cut into parts, each part would have to reach into the others' state.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import ClassVar, Protocol, overload

from rich.cells import cell_len
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from devtunnel.capture.rows import Row
from devtunnel.tui.widgets.table_rows import Columns, RowPainter, path_text, printable


class RowSource(Protocol):
    """Where the table reads its rows: pages of one ordered (filtered) list, oldest first."""

    async def after(self, exchange_id: str | None, limit: int, skip: int = 0) -> list[Row]:
        """The ``limit`` rows just after ``exchange_id`` (None: the oldest), passing over ``skip``."""
        ...

    async def before(self, exchange_id: str | None, limit: int, skip: int = 0) -> list[Row]:
        """The ``limit`` rows just before ``exchange_id`` (None: the newest), passing over the ``skip`` nearest."""
        ...

    async def position(self, exchange_id: str) -> int:
        """How many rows come before ``exchange_id``."""
        ...

    async def newest(self, limit: int, skip: int = 0) -> tuple[list[Row], int | None]:
        """``before(None, limit, skip)``, and how many rows the list had as they were read (None
        where counting costs more than the page: the table then keeps its own count)."""
        ...


class EmptySource:
    """No rows: the table's source before its first list, or for a list that could not be read."""

    async def after(self, exchange_id: str | None, limit: int, skip: int = 0) -> list[Row]:
        return []

    async def before(self, exchange_id: str | None, limit: int, skip: int = 0) -> list[Row]:
        return []

    async def position(self, exchange_id: str) -> int:
        return 0

    async def newest(self, limit: int, skip: int = 0) -> tuple[list[Row], int | None]:
        return [], 0


class _Ids(Sequence[str]):
    """The ids of a table by index: ``len`` is every row, an index outside the window reads ``""``."""

    def __init__(self, table: RequestTable) -> None:
        self._table = table

    def __len__(self) -> int:
        return self._table.total

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        row = self._table.row_at(index)
        return row.id if row is not None else ""

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))


SEEN_TUNNELS = 64
"""Tunnel names the table remembers having shown (for its TUNNEL column's width)."""


class RequestTable(ScrollView, can_focus=True):
    """Every exchange in view, oldest at the top, following new traffic at the bottom.

    | Key | Action |
    | :- | :- |
    | up / k, down / j | move the cursor (moving up pauses following) |
    | pageup, pagedown | move a page |
    | home / g | first request |
    | end / G / f | last request, and follow new traffic |
    | enter | open the request (posts ``Selected``) |
    | m | mark or unmark the request for a diff |
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G,f", "follow", "Follow"),
        Binding("enter", "select", "Detail"),
        Binding("m", "toggle_mark", "Mark"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "request-table--header",
        "request-table--cursor",
        "request-table--dim",
        "request-table--marked",
        "request-table--status-2xx",
        "request-table--status-3xx",
        "request-table--status-4xx",
        "request-table--status-5xx",
        "request-table--status-error",
        "request-table--held",
    }

    DEFAULT_CSS = """
    RequestTable {
        background: $surface;
        scrollbar-gutter: stable;
        & > .request-table--header { text-style: bold; color: $text-muted; background: $panel; }
        & > .request-table--cursor { background: $block-cursor-blurred-background; }
        &:focus > .request-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
        & > .request-table--dim { color: $text-muted; }
        & > .request-table--marked { color: $accent; text-style: bold; }
        & > .request-table--status-2xx { color: $text-success; }
        & > .request-table--status-3xx { color: $text-primary; }
        & > .request-table--status-4xx { color: $text-warning; }
        & > .request-table--status-5xx { color: $text-error; text-style: bold; }
        & > .request-table--status-error { color: $text-error; text-style: reverse; }
        & > .request-table--held { color: $text-warning; text-style: bold italic; }
    }
    """

    cursor: reactive[int] = reactive(-1, always_update=True)
    """Index in ``ids`` of the highlighted request (-1 when the table is empty)."""
    following: reactive[bool] = reactive(True)
    """True while the cursor sticks to the newest request."""

    class _Said(Message):
        """A message of the table's: ``control`` is the table (what ``on_...`` handlers filter by)."""

        def __init__(self, table: RequestTable) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> RequestTable:
            return self.table

    class Highlighted(_Said):
        """The cursor moved to another request."""

        def __init__(self, table: RequestTable, exchange_id: str | None) -> None:
            super().__init__(table)
            self.exchange_id = exchange_id

    class Selected(_Said):
        """Enter (or a double click) on a request."""

        def __init__(self, table: RequestTable, exchange_id: str) -> None:
            super().__init__(table)
            self.exchange_id = exchange_id

    class FollowChanged(_Said):
        """Following live traffic was paused or resumed."""

        def __init__(self, table: RequestTable, following: bool) -> None:
            super().__init__(table)
            self.following = following

    WINDOW_ROWS = 1024
    """Rows kept in memory around the view (the window), whatever the size of the list."""
    LINE_CACHE = 1000
    """Rendered lines kept (least recently drawn go first), the way Textual's own table widget bounds its cache."""

    def __init__(self, source: RowSource | None = None, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._source: RowSource = source or EmptySource()
        self.total = 0
        """How many rows the list has (an estimate until ``total_exact``)."""
        self.total_exact = True
        self._rows: list[Row] = []
        self._ids: list[str] = []
        self._start = 0
        self._at_start = True
        self._at_end = True
        self._generation = 0
        self._edits = 0
        self._wanted: tuple[int, int] | None = None
        self._loading = False
        self._read_failing = False
        self.read_failed: Callable[[Exception], None] | None = None
        """Where a failed read of the source is said (the app's one notice about the store);
        None: the table says it, once until a read succeeds."""
        self._lines: OrderedDict[str, tuple[Row, int, bool, Strip]] = OrderedDict()
        self._styles: dict[str, Style] = {}
        self._pass: tuple[int, Columns, Style] | None = None
        self._shape: tuple[tuple[object, ...], bool, int, bool, int] = ((), True, 16, True, 0)
        self._seen_tunnels: dict[str, int] = {}
        """The tunnels of the rows loaded so far, with their names' cells (at most ``SEEN_TUNNELS``):
        the columns follow what the table has shown, not only the window, so they do not come and
        go as it scrolls (a page of one tunnel's rows among several's read as the other's)."""
        self._seen_webhooks = False
        """What the window's rows need of the columns, and the window it was found for: several
        tunnels, the longest tunnel name's cells, webhooks, the longest path's cells (``_columns``)."""
        self._seen_path = 0
        """The cells of the longest PATH of the rows loaded so far (the PATH column's width on a wide table)."""
        self._measured: tuple[int, str, str] = (-1, "", "")
        """The list (``_generation``) and the first and last ids of the window whose paths were
        measured last: of the next window, only the rows outside those ids are measured."""
        self._painter = RowPainter(self._style)
        self.reads = 0
        """Pages read from the source so far (with ``rows_read``, what tests count)."""
        self.rows_read = 0
        self.marked: set[str] = set()
        """Ids marked with ``m`` (the first one is diffed against the cursor's)."""

    # -- data -------------------------------------------------------------------------

    @property
    def ids(self) -> Sequence[str]:
        """The ids by index, oldest first (``""`` for a row outside the loaded window)."""
        return _Ids(self)

    @property
    def current_id(self) -> str | None:
        """The id under the cursor (None while its row is not loaded)."""
        row = self.row_at(self.cursor)
        return row.id if row is not None else None

    def row_at(self, index: int) -> Row | None:
        """The row at ``index`` if it is in the window."""
        at = index - self._start
        return self._rows[at] if 0 <= at < len(self._rows) else None

    def cached_row(self, exchange_id: str) -> Row | None:
        """The row for ``exchange_id`` if it is in the window."""
        at = bisect_left(self._ids, exchange_id)
        return self._rows[at] if at < len(self._ids) and self._ids[at] == exchange_id else None

    @property
    def source(self) -> RowSource:
        """Where the rows are read from."""
        return self._source

    @property
    def window(self) -> Sequence[Row]:
        """The rows in memory, oldest first."""
        return self._rows

    def tail_rows(self) -> int:
        """How many of the newest rows the view holds when it shows the end of the list."""
        # Before the first layout the table has no height yet: the screen's bounds it.
        return max(3 * self._page, 2 * self.app.size.height if self.is_attached else 0)

    def set_source(self, source: RowSource, total: int, *, exact: bool = True,
                   tail: tuple[Sequence[Row], int] | None = None) -> None:
        """Show the rows of ``source`` (``total`` of them), keeping the cursor on the same request if present.

        ``tail`` is the newest rows of the list if already read, and how many were asked for.
        """
        current = None if self.following else self.current_id
        self._source = source
        self._generation += 1
        self._set_window([], 0, at_start=False, at_end=False)  # nothing read yet
        if tail is not None and current is None:
            rows, asked = tail
            if len(rows) < asked:
                total, exact = len(rows), True
            self._set_window(list(rows), max(0, total - len(rows)), at_start=len(rows) < asked, at_end=True)
        self._lines.clear()
        self.set_total(total, exact=exact)
        if self._at_end:
            self._anchor_end()
        if current is None:
            self._move(self.total - 1, keep_following=True)
            self._want_view()
        else:
            self.run_worker(partial(self._find, current, self._generation), group="request-table-find", exclusive=True,
                            exit_on_error=False)
        self.refresh()

    def set_total(self, total: int, *, exact: bool = True) -> None:
        """Correct the number of rows (an exact count arrived, or an estimate changed)."""
        self.total_exact = exact
        if total == self.total:
            return
        self.total = max(0, total)
        if self._at_end:
            self._anchor_end()
        self._resize_virtual()
        if self.following:
            self._move(self.total - 1, keep_following=True)
        elif self.cursor >= self.total:
            self._move(self.total - 1, keep_following=True)
        self.refresh()

    async def _find(self, exchange_id: str, generation: int) -> None:
        """Put the cursor on ``exchange_id`` (or the nearest row after it) in the new list."""
        try:
            position = await self._source.position(exchange_id)
        except Exception as exc:  # a store error must not kill the table; the cursor stays, say it
            self._cannot_read(exc)
            return
        self._read_failing = False
        if generation != self._generation:
            return
        self._move(min(position, self.total - 1), keep_following=True)
        self.call_after_refresh(self._scroll_cursor_into_view)
        self._want_view()

    def apply_changes(self, rows: Sequence[Row], changed: Iterable[str], total: int | None = None) -> bool:
        """Apply exchanges that were added or updated.

        Args:
            rows: the changed exchanges that belong to the list now, oldest first.
            changed: every changed id (those not in ``rows`` leave the list if they were in it).
            total: the exact new number of rows if known (without a filter, the store's count).

        Returns:
            False when a change fell outside the window where its effect on ``total`` is unknown
            (the caller should count again).
        """
        self._edits += 1  # a page read before this is stale: it is read again
        matching = {row.id: row for row in rows}
        known = True
        delta = 0
        before_cursor = 0
        cursor_id = self.current_id
        first = self._ids[0] if self._ids else None
        last = self._ids[-1] if self._ids else None
        known_empty = not self._rows and self._at_start and self._at_end
        for exchange_id in sorted(set(changed) | matching.keys()):
            row = matching.get(exchange_id)
            inside = (first is not None and exchange_id >= first and (exchange_id <= last or self._at_end))  # type: ignore[operator]
            if known_empty:
                inside = True  # the list was empty: everything new lands in the window
            if not inside:
                if first is not None and exchange_id < first and row is not None and self._at_start:
                    inside = True  # older than the whole list: it becomes the first row
                else:
                    known = False
                    continue
            at = bisect_left(self._ids, exchange_id)
            present = at < len(self._ids) and self._ids[at] == exchange_id
            if row is not None and present:
                self._rows[at] = row
                self._lines.pop(exchange_id, None)
            elif row is not None:
                self._rows.insert(at, row)
                self._ids.insert(at, exchange_id)
                delta += 1
                if cursor_id is not None and exchange_id < cursor_id:
                    before_cursor += 1
            elif present:
                del self._rows[at], self._ids[at]
                self._lines.pop(exchange_id, None)
                delta -= 1
                if cursor_id is not None and exchange_id < cursor_id:
                    before_cursor -= 1
            elif total is not None and self._at_end and (last is None or exchange_id > last):
                # Announced but not read with the rest (committed a moment after): the window
                # no longer knows where the list ends, so the end is read again.
                self._at_end = False
        if total is not None and total < self.total + delta:
            # Fewer rows than were announced: some left the list unannounced (the agent's store
            # at its limit removes its oldest as it records new ones; another process deleted
            # some). The window may hold them and its indexes count them: it is read again from
            # the source, the cursor kept on its request (or following).
            self.set_source(self._source, total)
            return True
        if known and total is not None and self._at_end and total > self.total + delta:
            # More rows than were announced: another process stored some (``devtunnel replay``
            # from the CLI records its replay itself; the agent never announces it). They come
            # after the window's end as it was, so that end is read again, with the new rows.
            if last is not None:
                keep = bisect_left(self._ids, last) + 1
                for dropped in self._ids[keep:]:
                    self._lines.pop(dropped, None)
                del self._rows[keep:], self._ids[keep:]
            self._at_end = False
        new_total = total if total is not None else self.total + delta
        self.total = max(0, new_total, len(self._rows))
        if self._at_end:
            self._anchor_end()
        self._resize_virtual()
        if self.following:
            self._move(self.total - 1, keep_following=True)
        elif before_cursor:
            self.set_reactive(RequestTable.cursor, max(0, self.cursor + before_cursor))
        self._trim()
        self.refresh()
        return known or total is not None

    def read_end(self) -> None:
        """Rows may have joined the list after its end with no notice (another process stored
        them; a filtered list has no count to tell): read after the last row again."""
        if not (self._rows and self._at_end):
            return
        self._at_end = False
        end = self._start + len(self._rows)
        self._wanted = (end, end + self._page)
        if not self._loading:
            self._loading = True
            self.run_worker(self._load, group="request-table-load", exit_on_error=False)

    def _anchor_end(self) -> None:
        """Count a window that ends the list from the end; rows before it mean it does not start it."""
        self._start = max(0, self.total - len(self._rows))
        if self._start > 0:
            self._at_start = False

    def _set_window(self, rows: list[Row], start: int, *, at_start: bool, at_end: bool) -> None:
        self._rows = rows
        self._ids = [row.id for row in rows]
        self._start = start
        self._at_start = at_start
        self._at_end = at_end

    def _resize_virtual(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, self.total + 1)

    def on_resize(self) -> None:
        self._lines.clear()
        self._resize_virtual()
        self._scroll_cursor_into_view()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._restyle()

    # -- cursor -----------------------------------------------------------------------

    def _move(self, index: int, *, keep_following: bool = False) -> None:
        index = max(-1 if not self.total else 0, min(index, self.total - 1))
        if not keep_following and self.following and index < self.total - 1:
            self.following = False
        self.cursor = index

    def watch_cursor(self, old: int, new: int) -> None:
        # After the refresh: the virtual size may have just grown, and scrolling clamps to it.
        self.call_after_refresh(self._scroll_cursor_into_view)
        self.refresh()
        self.post_message(self.Highlighted(self, self.current_id))

    def watch_following(self, following: bool) -> None:
        self.post_message(self.FollowChanged(self, following))

    @property
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_cursor_into_view(self) -> None:
        # ``force``: Textual lets a widget scroll only once a layout has shown its scrollbar,
        # which may come after this (the virtual size just grew, a refresh ago); unforced, the
        # table stayed at its top, its cursor's row out of sight, until a key or a new row.
        if self.cursor < 0:
            return
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True, force=True)
        elif self.cursor >= top + self._page:
            self.scroll_to(y=self.cursor - self._page + 1, animate=False, immediate=True, force=True)

    def action_cursor_up(self) -> None:
        self._move(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self._move(self.cursor + 1)

    def action_page_up(self) -> None:
        self._move(self.cursor - self._page)

    def action_page_down(self) -> None:
        self._move(self.cursor + self._page)

    def action_first(self) -> None:
        self._move(0)

    def action_follow(self) -> None:
        """Jump to the newest request and keep following new traffic."""
        self.following = True
        self._move(self.total - 1, keep_following=True)

    def action_select(self) -> None:
        if self.current_id is not None:
            self.post_message(self.Selected(self, self.current_id))

    def action_toggle_mark(self) -> None:
        exchange_id = self.current_id
        if exchange_id is None:
            return
        self.marked.symmetric_difference_update({exchange_id})
        self._lines.pop(exchange_id, None)
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        index = round(self.scroll_y) + offset.y - 1
        if index < self.total:
            self._move(index)
            if event.chain >= 2:
                self.action_select()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        # Reading back through history with the wheel must not be yanked away by new traffic.
        self.following = False

    def on_focus(self) -> None:
        self._restyle()  # the cursor's look follows focus

    def on_blur(self) -> None:
        self._restyle()

    # -- rows -------------------------------------------------------------------------

    def _view(self) -> tuple[int, int]:
        """The rows to hold for the current view: it and a page on each side."""
        top = round(self.scroll_y)
        if self.following or self.cursor >= top + self._page:
            top = max(top, self.cursor - self._page + 1)
        page = self._page
        return max(0, top - page), min(self.total, top + 2 * page)

    def _covered(self, lo: int, hi: int) -> bool:
        if hi <= lo:
            return True
        end = self._start + len(self._rows)
        return (self._start <= lo or self._at_start) and (hi <= end or self._at_end)

    def _want_view(self) -> None:
        lo, hi = self._view()
        if self._covered(lo, hi):
            return
        self._wanted = (lo, hi)
        if not self._loading:
            self._loading = True
            # A worker, not a callback: the table's own messages (keys) must not wait on a read,
            # and a store held locked by another process holds a read for a second.
            self.run_worker(self._load, group="request-table-load", exit_on_error=False)

    async def _load(self) -> None:
        try:
            while self._wanted is not None:
                lo, hi = self._wanted
                self._wanted = None
                if self._covered(lo, hi):
                    continue
                generation = (self._generation, self._edits)
                try:
                    await self._fetch(lo, hi, generation)
                except Exception as exc:  # a store error must not kill the table; say it
                    self._cannot_read(exc)
                    return
                self._read_failing = False
                if generation[0] == self._generation:
                    self._trim()
                    self.refresh()
                    self.post_message(self.Highlighted(self, self.current_id))
                self._want_view()  # what the view needs now (nothing if it is covered)
        finally:
            self._loading = False

    def _cannot_read(self, exc: Exception) -> None:
        """Say that a read failed, once until one succeeds (to ``read_failed`` if it is set)."""
        if self.read_failed is not None:
            self.read_failed(exc)
        elif not self._read_failing:
            self._read_failing = True
            self.notify(str(exc), title="Could not read captures", severity="error", markup=False)

    async def _read(self, method: str, key: str | None, limit: int, skip: int = 0) -> list[Row]:
        self.reads += 1
        rows: list[Row] = await getattr(self._source, method)(key, limit, skip)
        self.rows_read += len(rows)
        return rows

    async def _newest(self, limit: int, skip: int = 0) -> tuple[list[Row], int | None]:
        self.reads += 1
        rows, counted = await self._source.newest(limit, skip)
        self.rows_read += len(rows)
        return rows, counted

    def _stale(self, generation: tuple[int, int], *, ends_list: bool) -> bool:
        """Whether a read begun at ``generation`` must be dropped: the list was replaced, or it
        says where the list ends and live changes were applied meanwhile (rows it could not see)."""
        return generation[0] != self._generation or (ends_list and generation[1] != self._edits)

    async def _fetch(self, lo: int, hi: int, generation: tuple[int, int]) -> None:
        """Read rows ``lo:hi``: next to the window by keyset, or by a jump from the nearer end."""
        end = self._start + len(self._rows)
        reach = self._page * 4
        if self._rows and end < hi and lo <= end + reach and not self._at_end:
            want = hi - end
            rows = await self._read("after", self._ids[-1], want)
            if self._stale(generation, ends_list=len(rows) < want) or (rows and rows[0].id <= self._ids[-1]):
                return
            self._rows += rows
            self._ids += [row.id for row in rows]
            if self._start + len(self._rows) > self.total:  # more than it counted (``read_end``)
                self.set_total(self._start + len(self._rows), exact=self.total_exact)
            if len(rows) < want:
                self._at_end = True
                self.set_total(self._start + len(self._rows), exact=self.total_exact)
            if lo < self._start and not self._at_start:
                self._wanted = (lo, hi)
            return
        if self._rows and lo < self._start and hi >= self._start - reach and not self._at_start:
            want = self._start - lo
            rows = await self._read("before", self._ids[0], want)
            if self._stale(generation, ends_list=False) or (rows and rows[-1].id >= self._ids[0]):
                return
            self._rows[:0] = rows
            self._ids[:0] = [row.id for row in rows]
            self._start -= len(rows)
            shift = 0
            if len(rows) < want:
                self._at_start = True  # the list starts here: indexes count from it
                shift = -self._start
            elif self._start <= 0 and self._ids:
                # More rows before than the indexes left room for (an estimate, or the oldest
                # removed meanwhile): ask where the window really is.
                first = self._ids[0]
                position = await self._source.position(first)
                if self._stale(generation, ends_list=False) or not self._ids or self._ids[0] != first:
                    return
                shift = position - self._start
            if shift:
                self._shift(shift)
            return
        want = hi - lo
        counted: int | None = None
        if self.total - hi <= lo:
            skip = max(0, self.total - hi)
            rows, counted = await self._newest(want, skip)
        else:
            skip = lo
            rows = await self._read("after", None, want, skip)
            if self._stale(generation, ends_list=len(rows) < want):
                return
            if rows:
                at_end = len(rows) < want
                self._set_window(rows, lo, at_start=lo == 0, at_end=at_end)
                if at_end:
                    self.set_total(lo + len(rows), exact=True)
                self._lines.clear()
                return
            skip = 0  # the list is shorter than the estimate said: read its end
            rows, counted = await self._newest(want)
        if not rows and skip and not self._stale(generation, ends_list=False):
            skip = 0
            rows, counted = await self._newest(want)
        if self._stale(generation, ends_list=skip == 0 or len(rows) < want):
            return
        at_start = len(rows) < want
        if at_start:
            # Fewer rows than asked for: the list starts in this page, so its size is known.
            self._set_window(rows, 0, at_start=True, at_end=skip == 0)
            if skip == 0 or rows:
                self.set_total(skip + len(rows), exact=True)
        else:
            # Counted from the end: by the list's size as these rows were read, when the source
            # knows it. Rows recorded after the table's count and before this read (under
            # traffic, not yet announced) would otherwise number every row too early.
            end = self.total if counted is None else counted
            self._set_window(rows, max(0, end - skip - len(rows)), at_start=False, at_end=skip == 0)
            if counted is not None:
                self.set_total(counted, exact=True)
        self._lines.clear()

    def _shift(self, by: int) -> None:
        """Move the window, the cursor and the view ``by`` rows down the list (its true place)."""
        self._start += by
        self.set_total(max(self.total + by, self._start + len(self._rows)), exact=self.total_exact)
        if not self.following:
            self.set_reactive(RequestTable.cursor, max(0, min(self.cursor + by, self.total - 1)))
        self.scroll_to(y=max(0, self.scroll_y + by), animate=False, immediate=True)

    def _trim(self) -> None:
        """Keep at most ``WINDOW_ROWS`` rows, dropping those farthest from the view."""
        excess = len(self._rows) - self.WINDOW_ROWS
        if excess <= 0:
            return
        lo, hi = self._view()
        middle = (lo + hi) // 2 - self._start
        if middle > len(self._rows) // 2:
            del self._rows[:excess], self._ids[:excess]
            self._start += excess
            self._at_start = False
        else:
            del self._rows[-excess:], self._ids[-excess:]
            self._at_end = False

    # -- rendering --------------------------------------------------------------------

    def _style(self, name: str) -> Style:
        """A component's style (``""``: the widget's own), looked up once per look of the widget."""
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(name) if name else self.rich_style
        return style

    def _restyle(self) -> None:
        self._styles.clear()
        self._lines.clear()
        self.refresh()

    def _columns(self, width: int) -> Columns:
        """The columns for ``width`` and the rows loaded so far: TUNNEL where they are of several
        tunnels (or there is room), sized to their names; EVENT where webhooks are among them."""
        rows = self._rows
        key = (id(rows), len(rows), self._edits, rows[0].id if rows else "", rows[-1].id if rows else "")
        if self._shape[0] != key:
            seen = self._seen_tunnels
            for name in {row.tunnel for row in rows}:
                if name not in seen and len(seen) < SEEN_TUNNELS:
                    seen[name] = cell_len(printable(name))
            self._seen_webhooks = self._seen_webhooks or any(row.webhook is not None for row in rows)
            self._measure_paths()
            shape = (key, len(seen) > 1, max(seen.values(), default=0), self._seen_webhooks, self._seen_path)
            if shape[1:] != self._shape[1:]:
                self._lines.clear()  # drawn for other columns
            self._shape = shape
        _, several, cells, webhooks, path = self._shape
        return Columns.for_width(width, several_tunnels=several, tunnel_cells=cells, webhooks=webhooks, path_cells=path)

    def _measure_paths(self) -> None:
        """Add the paths of the rows new to the window to ``_seen_path``: under traffic a few rows
        at its end, not the thousand it holds."""
        rows, ids = self._rows, self._ids
        generation, first, last = self._measured
        if generation == self._generation and rows:
            new = [*rows[:bisect_left(ids, first)], *rows[bisect_right(ids, last):]]
        else:
            new = rows
        if new:
            self._seen_path = max(self._seen_path, max(cell_len(path_text(row)) for row in new))
        self._measured = (self._generation, ids[0], ids[-1]) if ids else (-1, "", "")

    def render_lines(self, crop: Region) -> list[Strip]:
        # Once per frame rather than once per line: the widths, and whether the view needs rows.
        width = self.scrollable_content_region.width
        self._pass = (width, self._columns(width), self._style(""))
        if not self._covered(*self._view()):
            self._want_view()
        try:
            return super().render_lines(crop)
        finally:
            self._pass = None

    def render_line(self, y: int) -> Strip:
        if self._pass is None:
            width = self.scrollable_content_region.width
            width, columns, base = width, self._columns(width), self._style("")
        else:
            width, columns, base = self._pass
        if y == 0:
            return self._painter.header(columns, width, base)
        index = round(self.scroll_y) + y - 1
        if index >= self.total:
            return Strip.blank(width, base)
        row = self.row_at(index)
        if row is None:
            self._want_view()
            return self._painter.row(None, columns, width, base, is_cursor=False, marked=False)
        is_cursor = index == self.cursor
        marked = row.id in self.marked
        if is_cursor:  # one line, and its look follows focus: not cached
            return self._painter.row(row, columns, width, base, is_cursor=True, marked=marked)
        cached = self._lines.get(row.id)
        if cached is not None and cached[0] is row and cached[1] == width and cached[2] == marked:
            self._lines.move_to_end(row.id)
            return cached[3]
        strip = self._painter.row(row, columns, width, base, is_cursor=False, marked=marked)
        self._lines[row.id] = (row, width, marked, strip)
        if len(self._lines) > self.LINE_CACHE:
            self._lines.popitem(last=False)
        return strip
