"""The live request table: a virtualised Line API view over a list of exchange ids.

The widget holds only the ordered ids it shows and a small cache of light ``Row``s; it asks its
``loader`` (an async callable, normally the store through the backend's reader thread) for the
rows of the lines about to be drawn, and renders each visible line as plain segments. Nothing
captured is ever parsed as markup, and control characters are shown as visible escapes.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from devtunnel.capture.outcome import replay_mark
from devtunnel.capture.store import Row
from devtunnel.tui.render import webhook_event, webhook_marks
from devtunnel.values.terminal import escape as printable

RowLoader = Callable[[list[str]], Awaitable[list[Row]]]
"""Loads light rows for ids (missing ids are skipped)."""

def _fit(text: str, width: int, *, right: bool = False) -> str:
    """Pad or cut ``text`` to exactly ``width`` cells, ending a cut with an ellipsis."""
    if width <= 0:
        return ""
    length = cell_len(text)
    if length > width:
        return set_cell_size(text, width - 1) + "…"
    padding = " " * (width - length)
    return padding + text if right else text + padding


def format_duration(seconds: float | None) -> str:
    """``850ms``, ``1.25s``, ``2m05s``; ``…`` while in flight."""
    if seconds is None:
        return "…"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def format_size(size: int) -> str:
    """Bytes as ``512B``, ``1.5K``, ``12M``."""
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" or value >= 10 else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"


@dataclass(frozen=True)
class _Columns:
    """Cell widths of each column for one table width."""

    tunnel: int
    path: int
    event: int = 0
    """The EVENT column (provider and event type); 0 when too narrow to show it."""

    TIME: ClassVar[int] = 8
    METHOD: ClassVar[int] = 7
    STATUS: ClassVar[int] = 3
    DURATION: ClassVar[int] = 7
    SIZE: ClassVar[int] = 5
    MARKS: ClassVar[int] = 2
    """The webhook marks: the signature's (✓ ✗ – ?) and the duplicate's (≡)."""

    @classmethod
    def for_width(cls, width: int) -> _Columns:
        # Below 96 cells TUNNEL yields (the tunnels panel names them) so PATH and EVENT stay
        # readable at 80; below 70 EVENT yields too, and the marks alone say "a webhook".
        fixed = (2 + cls.TIME + 1 + cls.METHOD + 1 + 1 + cls.MARKS + 1 + cls.STATUS + 1 + cls.DURATION + 1
                 + cls.SIZE)
        rest = width - fixed
        tunnel = 0 if width < 96 else min(16, max(8, rest // 8))
        rest -= tunnel + 1 if tunnel else 0
        event = 0 if width < 70 else min(36, max(12, rest // 2))
        path = max(4, rest - (event + 1 if event else 0))
        return cls(tunnel, path, event)


def _webhook_cells(row: Row, columns: _Columns, base: Style) -> list[Segment]:
    """The marks cell and, when it fits, the EVENT column of a row (each followed by a space)."""
    segments = [Segment(text, base + Style.parse(style) if style else base) for text, style in webhook_marks(row.webhook)]
    segments.append(Segment(" ", base))
    if columns.event:
        segments += [Segment(_fit(webhook_event(row.webhook), columns.event), base), Segment(" ", base)]
    return segments


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
    }
    """

    cursor: reactive[int] = reactive(-1, always_update=True)
    """Index in ``ids`` of the highlighted request (-1 when the table is empty)."""
    following: reactive[bool] = reactive(True)
    """True while the cursor sticks to the newest request."""

    class Highlighted(Message):
        """The cursor moved to another request."""

        def __init__(self, table: RequestTable, exchange_id: str | None) -> None:
            super().__init__()
            self.table = table
            self.exchange_id = exchange_id

        @property
        def control(self) -> RequestTable:
            return self.table

    class Selected(Message):
        """Enter (or a double click) on a request."""

        def __init__(self, table: RequestTable, exchange_id: str) -> None:
            super().__init__()
            self.table = table
            self.exchange_id = exchange_id

        @property
        def control(self) -> RequestTable:
            return self.table

    class FollowChanged(Message):
        """Following live traffic was paused or resumed."""

        def __init__(self, table: RequestTable, following: bool) -> None:
            super().__init__()
            self.table = table
            self.following = following

        @property
        def control(self) -> RequestTable:
            return self.table

    CACHE_ROWS = 4096
    """Rows kept in memory; only a few screens' worth is ever needed."""

    def __init__(self, loader: RowLoader, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._loader = loader
        self._ids: list[str] = []
        self._known: set[str] = set()
        self._rows: OrderedDict[str, Row] = OrderedDict()
        self._wanted: set[str] = set()
        self._loading = False
        self._lines: dict[tuple[str, int, bool, bool], Strip] = {}
        self.marked: set[str] = set()
        """Ids marked with ``m`` (the first one is diffed against the cursor's)."""

    # -- data -------------------------------------------------------------------------

    @property
    def ids(self) -> Sequence[str]:
        """The ids shown, oldest first."""
        return self._ids

    @property
    def current_id(self) -> str | None:
        """The id under the cursor."""
        return self._ids[self.cursor] if 0 <= self.cursor < len(self._ids) else None

    def cached_row(self, exchange_id: str) -> Row | None:
        """The row for ``exchange_id`` if it is in the cache."""
        return self._rows.get(exchange_id)

    def set_ids(self, ids: Iterable[str]) -> None:
        """Show exactly ``ids`` (oldest first), keeping the cursor on the same request if present."""
        current = self.current_id
        self._ids = list(ids)
        self._known = set(self._ids)
        self._lines.clear()
        self._resize_virtual()
        if self.following or current is None:
            self._move(len(self._ids) - 1, keep_following=True)
        else:
            index = bisect_left(self._ids, current)
            self._move(min(index, len(self._ids) - 1), keep_following=True)
        self.refresh()

    def add_ids(self, ids: Iterable[str]) -> int:
        """Insert new ids in order (ids already shown are ignored); returns how many were new."""
        added = 0
        for exchange_id in sorted(set(ids) - self._known):
            if not self._ids or exchange_id > self._ids[-1]:
                self._ids.append(exchange_id)
            else:
                index = bisect_left(self._ids, exchange_id)
                self._ids.insert(index, exchange_id)
                if index <= self.cursor:
                    self.set_reactive(RequestTable.cursor, self.cursor + 1)
            self._known.add(exchange_id)
            added += 1
        if added:
            self._resize_virtual()
            if self.following:
                self._move(len(self._ids) - 1, keep_following=True)
                # Read the new bottom page now rather than after a frame has drawn it empty.
                self._want_range(max(0, len(self._ids) - self._page), len(self._ids))
            self.refresh()
        return added

    def invalidate(self, ids: Iterable[str]) -> None:
        """Forget cached rows for ``ids`` (their exchanges changed) so they are read again."""
        stale = False
        for exchange_id in ids:
            if self._rows.pop(exchange_id, None) is not None:
                stale = True
        if stale:
            self._lines.clear()
            self.refresh()

    def _resize_virtual(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, len(self._ids) + 1)

    def on_resize(self) -> None:
        self._lines.clear()
        self._resize_virtual()
        self._scroll_cursor_into_view()

    # -- cursor -----------------------------------------------------------------------

    def _move(self, index: int, *, keep_following: bool = False) -> None:
        index = max(-1 if not self._ids else 0, min(index, len(self._ids) - 1))
        if not keep_following and self.following and index < len(self._ids) - 1:
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
        if self.cursor < 0:
            return
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + self._page:
            self.scroll_to(y=self.cursor - self._page + 1, animate=False, immediate=True)

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
        self._move(len(self._ids) - 1, keep_following=True)

    def action_select(self) -> None:
        if self.current_id is not None:
            self.post_message(self.Selected(self, self.current_id))

    def action_toggle_mark(self) -> None:
        exchange_id = self.current_id
        if exchange_id is None:
            return
        self.marked.symmetric_difference_update({exchange_id})
        self._lines.clear()
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        index = round(self.scroll_y) + offset.y - 1
        if index < len(self._ids):
            self._move(index)
            if event.chain >= 2:
                self.action_select()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        # Reading back through history with the wheel must not be yanked away by new traffic.
        self.following = False

    # -- rows -------------------------------------------------------------------------

    def _want(self, index: int) -> None:
        """Note that the row at ``index`` is missing and queue a load of the visible window."""
        top = round(self.scroll_y)
        self._want_range(max(0, top - self._page), top + 2 * self._page)

    def _want_range(self, start: int, end: int) -> None:
        """Queue a load of the rows at ``start:end`` that are not cached."""
        for exchange_id in self._ids[start:end]:
            if exchange_id not in self._rows:
                self._wanted.add(exchange_id)
        if self._wanted and not self._loading:
            self._loading = True
            self.call_later(self._load_wanted)

    async def _load_wanted(self) -> None:
        try:
            while self._wanted:
                batch, self._wanted = list(self._wanted), set()
                try:
                    rows = await self._loader(batch)
                except Exception as exc:  # a store error must not kill the table; say it once
                    self.notify(str(exc), title="Could not read captures", severity="error")
                    return
                for row in rows:
                    self._rows[row.id] = row
                    self._rows.move_to_end(row.id)
                while len(self._rows) > self.CACHE_ROWS:
                    self._rows.popitem(last=False)
                self._lines.clear()
                self.refresh()
        finally:
            self._loading = False

    # -- rendering --------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        columns = _Columns.for_width(width)
        base = self.rich_style
        if y == 0:
            return self._header(columns, width, base)
        index = round(self.scroll_y) + y - 1
        if index >= len(self._ids):
            return Strip.blank(width, base)
        exchange_id = self._ids[index]
        is_cursor = index == self.cursor
        key = (exchange_id, width, is_cursor, exchange_id in self.marked)
        strip = self._lines.get(key)
        if strip is None:
            row = self._rows.get(exchange_id)
            if row is None:
                self._want(index)
            strip = self._render_row(exchange_id, row, columns, width, base, is_cursor)
            if row is not None:
                if len(self._lines) > self.CACHE_ROWS:
                    self._lines.clear()  # rendered lines are cheap to redo; memory is bounded
                self._lines[key] = strip
        return strip

    def _header(self, columns: _Columns, width: int, base: Style) -> Strip:
        style = base + self.get_component_rich_style("request-table--header")
        cells = ["  ", _fit("TIME", _Columns.TIME), " "]
        if columns.tunnel:
            cells += [_fit("TUNNEL", columns.tunnel), " "]
        cells += [_fit("METHOD", _Columns.METHOD), " ", _fit("PATH", columns.path), " ", " " * _Columns.MARKS, " "]
        if columns.event:
            cells += [_fit("EVENT", columns.event), " "]
        cells += [_fit("ST", _Columns.STATUS), " ", _fit("DUR", _Columns.DURATION, right=True), " ",
                  _fit("SIZE", _Columns.SIZE, right=True)]
        return Strip([Segment("".join(cells), style)]).adjust_cell_length(width, style)

    def _status_style(self, row: Row) -> tuple[str, Style]:
        if row.error and row.status is None:
            return "ERR", self.get_component_rich_style("request-table--status-error")
        if row.status is None:
            return "…", self.get_component_rich_style("request-table--dim")
        klass = min(max(row.status // 100, 2), 5)
        return str(row.status), self.get_component_rich_style(f"request-table--status-{klass}xx")

    def _render_row(self, exchange_id: str, row: Row | None, columns: _Columns, width: int,
                    base: Style, is_cursor: bool) -> Strip:
        dim = base + self.get_component_rich_style("request-table--dim")
        marked = exchange_id in self.marked
        mark = Segment("* " if marked else "  ", base + self.get_component_rich_style("request-table--marked"))
        if row is None:
            segments = [mark, Segment(_fit("…", width - 2), dim)]
        else:
            status, status_style = self._status_style(row)
            path = printable(row.target)
            if row.replay_of:
                path = replay_mark(row) + path  # ↻ a replay, ✎ sent with changes, s signed afresh
            elif row.rule is not None:
                path = ("→ " if row.rule.action == "forward" else "⊘ ") + path  # decided by a rule at the relay
            method = "WS" if row.websocket else printable(row.method)
            segments = [mark, Segment(time.strftime("%H:%M:%S", time.localtime(row.started_at)), dim),
                        Segment(" ", base)]
            if columns.tunnel:
                segments += [Segment(_fit(printable(row.tunnel), columns.tunnel), dim), Segment(" ", base)]
            segments += [
                Segment(_fit(method, _Columns.METHOD), base),
                Segment(" ", base),
                Segment(_fit(path, columns.path), base),
                Segment(" ", base),
                *_webhook_cells(row, columns, base),
                Segment(_fit(status, _Columns.STATUS, right=True), base + status_style),
                Segment(" ", base),
                Segment(_fit(format_duration(row.duration), _Columns.DURATION, right=True), dim),
                Segment(" ", base),
                Segment(_fit(format_size(row.size), _Columns.SIZE, right=True), dim),
            ]
        strip = Strip(segments).adjust_cell_length(width, base)
        if is_cursor:
            cursor = self.get_component_rich_style("request-table--cursor")
            strip = Strip(Segment.apply_style(strip, post_style=cursor), width)
        return strip
