"""How the request table draws: column widths for a table width, cell text, and the rows as strips.

Pure drawing with Rich segments; the widget (``request_table.RequestTable``) decides which rows
are on screen, caches their lines and owns the cursor and the marks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from devtunnel.capture.marks import path_mark
from devtunnel.capture.store import Row
from devtunnel.tui.render import webhook_event, webhook_marks
from devtunnel.values.durations import human_duration
from devtunnel.values.sizes import compact_size
from devtunnel.values.terminal import escape as printable

__all__ = ["Columns", "RowPainter", "fit", "path_text", "printable", "webhook_cells"]


def fit(text: str, width: int, *, right: bool = False) -> str:
    """Pad or cut ``text`` to exactly ``width`` cells, ending a cut with an ellipsis."""
    if width <= 0:
        return ""
    length = cell_len(text)
    if length > width:
        return set_cell_size(text, width - 1) + "…"
    padding = " " * (width - length)
    return padding + text if right else text + padding


PATH_SHOWN = 2048
"""Characters of a target the PATH column escapes and measures at most: more than any terminal's
width (escaping only lengthens), and a captured target of a megabyte is not escaped whole for
each paint and for the column's width."""


def path_text(row: Row) -> str:
    """What the PATH column shows of ``row``: its mark (a replay, a rule's) and its target, escaped
    (its first ``PATH_SHOWN`` characters)."""
    # ↻ a replay, ✎ sent with changes, s signed afresh; ⊘ or → decided by a rule at the relay
    return path_mark(row) + printable(row.display_target_head(PATH_SHOWN))


@dataclass(frozen=True)
class Columns:
    """Cell widths of each column for one table width."""

    tunnel: int
    path: int
    event: int = 0
    """The EVENT column (provider and event type); 0 when too narrow to show it."""
    duration: int = 7
    """The DUR column: ``DURATION``, a little more on a wide table."""
    size: int = 5
    """The SIZE column: ``SIZE``, a little more on a wide table."""

    TIME: ClassVar[int] = 8
    METHOD: ClassVar[int] = 7
    STATUS: ClassVar[int] = 3
    DURATION: ClassVar[int] = 7
    SIZE: ClassVar[int] = 5
    MARKS: ClassVar[int] = 2
    """The webhook marks: the signature's (✓ ✗ – ?) and the duplicate's (≡)."""

    PATH_LEAST: ClassVar[int] = 24
    """Cells PATH keeps before TUNNEL or EVENT get any: what a request is matters most."""
    EVENT_LEAST: ClassVar[int] = 12
    EVENT_MOST: ClassVar[int] = 36
    EVENT_ROOMY: ClassVar[int] = 52
    """EVENT's cells on a table with room for them beside PATH's ``PATH_ROOMY``: a provider and
    the longest event types (``stripe · checkout.session.async_payment_succeeded``) whole."""
    TUNNEL_LEAST: ClassVar[int] = 6
    PATH_ROOMY: ClassVar[int] = 48
    """Cells PATH keeps before TUNNEL grows past a fifth of the room: a wide table names its
    tunnels in full (up to 32 cells) rather than cutting them beside a long empty PATH."""
    PATH_CAP: ClassVar[int] = 64
    """Cells PATH keeps on a wide table whose paths are all shorter: a path a little longer than
    the others does not move the columns after it."""
    BREATHE: ClassVar[int] = 2
    """Cells DUR and SIZE each get beyond their least on a wide table, between their figures."""
    FIXED: ClassVar[int] = 2 + TIME + 1 + METHOD + 1 + 1 + MARKS + 1 + STATUS + 1 + DURATION + 1 + SIZE
    """The cells of every column but PATH, TUNNEL and EVENT, with the spaces between them."""

    @property
    def used(self) -> int:
        """The cells of the columns and the spaces between them (the rest of a row is blank)."""
        return (self.FIXED + self.path + (self.tunnel + 1 if self.tunnel else 0) + (self.event + 1 if self.event else 0)
                + self.duration - self.DURATION + self.size - self.SIZE)

    @classmethod
    def for_width(cls, width: int, *, several_tunnels: bool = True, tunnel_cells: int = 16,
                  webhooks: bool = True, path_cells: int | None = None) -> Columns:
        """The widths for a table ``width`` cells wide showing rows of one tunnel or several, the
        longest tunnel name ``tunnel_cells`` wide, with webhooks among them or not, the longest
        PATH ``path_cells`` wide (None: not known, PATH takes the rest).

        PATH keeps ``PATH_LEAST`` cells; what is left goes to TUNNEL when the rows are of several
        tunnels, then to EVENT when webhooks are shown (the marks cell says "a webhook" without
        it; up to ``EVENT_MOST`` cells, ``EVENT_ROOMY`` while PATH keeps ``PATH_ROOMY``), then to
        TUNNEL on a wide table (96 cells and more) with room for it (a fifth of the room, more
        while PATH keeps ``PATH_ROOMY`` cells); each is left out rather than cut below its least
        width, and PATH takes the rest. So at 80 columns a table of several tunnels names them
        (webhooks or not), a table of one gives their cells to the path, and an EVENT column
        stays off a table without webhooks.

        A wide table gives PATH no more than its longest path (at least ``PATH_CAP`` cells): a
        PATH column of 130 cells, most of them blank, put a request's status, duration and size
        far from its path. EVENT then grows to ``EVENT_ROOMY``, DUR and SIZE get ``BREATHE``
        cells more each, and what is still left stays blank at the end of the row.
        """
        rest = width - cls.FIXED
        spare = rest - cls.PATH_LEAST

        def take(want: int, least: int) -> int:
            nonlocal spare
            size = min(want, spare - 1)
            if size < least:
                return 0
            spare -= size + 1
            return size

        tunnel_want = min(max(tunnel_cells, cls.TUNNEL_LEAST), min(32, max(10, rest // 5, rest - cls.PATH_ROOMY - 1)))
        wants_tunnel = several_tunnels or width >= 96
        # Rows of several tunnels name theirs before EVENT gets any room: which tunnel a row is
        # cannot be read elsewhere in it, while its marks cell says it is a webhook.
        tunnel = take(tunnel_want, cls.TUNNEL_LEAST) if several_tunnels else 0
        event = 0
        if webhooks:
            beside = rest - (tunnel_want + 1 if wants_tunnel else 0)
            # Stripe's longer types (customer.subscription.deleted) want 38 cells and more: a table
            # that leaves PATH its roomy width after them shows them whole.
            most = cls.EVENT_ROOMY if beside - cls.EVENT_ROOMY - 1 >= cls.PATH_ROOMY else cls.EVENT_MOST
            event = take(min(most, max(cls.EVENT_LEAST, beside // 2)), cls.EVENT_LEAST)
        if wants_tunnel and not several_tunnels:
            tunnel = take(tunnel_want, cls.TUNNEL_LEAST)
        path = max(4, rest - (tunnel + 1 if tunnel else 0) - (event + 1 if event else 0))
        duration, size = cls.DURATION, cls.SIZE
        need = max(cls.PATH_CAP, path_cells or 0)
        if path_cells is not None and path > need:
            extra, path = path - need, need
            if event:
                grown = min(extra, max(0, cls.EVENT_ROOMY - event))
                event, extra = event + grown, extra - grown
            breathe = min(cls.BREATHE, extra // 2)
            duration, size = duration + breathe, size + breathe
        return cls(tunnel, path, event, duration, size)


def webhook_cells(row: Row, columns: Columns, base: Style) -> list[Segment]:
    """The marks cell and, when it fits, the EVENT column of a row (each followed by a space)."""
    segments = [Segment(text, base + Style.parse(style) if style else base) for text, style in webhook_marks(row.webhook)]
    segments.append(Segment(" ", base))
    if columns.event:
        segments += [Segment(fit(webhook_event(row.webhook), columns.event), base), Segment(" ", base)]
    return segments


class RowPainter:
    """Draws the table's header and rows as strips, with the widget's component styles.

    ``style(name)`` is the widget's style lookup (``""``: its own). Nothing captured is parsed as
    markup: text reaches a ``Segment`` through ``values.terminal``'s escaping only.
    """

    def __init__(self, style: Callable[[str], Style]) -> None:
        self._style = style
        self._last_second: tuple[int, str] = (-1, "")

    def header(self, columns: Columns, width: int, base: Style) -> Strip:
        """The header line."""
        style = base + self._style("request-table--header")
        cells = ["  ", fit("TIME", Columns.TIME), " "]
        if columns.tunnel:
            cells += [fit("TUNNEL", columns.tunnel), " "]
        cells += [fit("METHOD", Columns.METHOD), " ", fit("PATH", columns.path), " ", " " * Columns.MARKS, " "]
        if columns.event:
            cells += [fit("EVENT", columns.event), " "]
        cells += [fit("ST", Columns.STATUS), " ", fit("DUR", columns.duration, right=True), " ",
                  fit("SIZE", columns.size, right=True)]
        return Strip([Segment("".join(cells), style)]).adjust_cell_length(width, style)

    def _clock(self, started_at: float) -> str:
        """``HH:MM:SS`` of a time, remembered for the last second asked (rows arrive in runs)."""
        second = int(started_at // 1)
        if self._last_second[0] != second:
            self._last_second = (second, time.strftime("%H:%M:%S", time.localtime(second)))
        return self._last_second[1]

    def _status_style(self, row: Row) -> tuple[str, Style]:
        if row.error:
            # A response begun, then broken (the agent killed mid-body, the client gone): its
            # status in the error's look, as ``devtunnel requests`` says ``200 ERR``, not a 200.
            return "ERR" if row.status is None else str(row.status), self._style("request-table--status-error")
        if row.status is None:
            if row.holding:  # not sent yet: waits for the app devtunnel runs to come back (--hold)
                return "HLD", self._style("request-table--held")
            return "…", self._style("request-table--dim")
        klass = min(max(row.status // 100, 2), 5)
        return str(row.status), self._style(f"request-table--status-{klass}xx")

    def row(self, row: Row | None, columns: Columns, width: int, base: Style, *, is_cursor: bool, marked: bool) -> Strip:
        """One row's line (``None``: a row not read yet, shown as ``…``)."""
        dim = base + self._style("request-table--dim")
        mark = Segment("* " if marked else "  ", base + self._style("request-table--marked"))
        if row is None:
            segments = [mark, Segment(fit("…", width - 2), dim)]
        else:
            status, status_style = self._status_style(row)
            path = path_text(row)
            method = "WS" if row.websocket else printable(row.method)
            segments = [mark, Segment(self._clock(row.started_at), dim),
                        Segment(" ", base)]
            if columns.tunnel:
                segments += [Segment(fit(printable(row.tunnel), columns.tunnel), dim), Segment(" ", base)]
            segments += [
                Segment(fit(method, Columns.METHOD), base),
                Segment(" ", base),
                Segment(fit(path, columns.path), base),
                Segment(" ", base),
                *webhook_cells(row, columns, base),
                Segment(fit(status, Columns.STATUS, right=True), base + status_style),
                Segment(" ", base),
                Segment(fit(human_duration(row.duration, "…"), columns.duration, right=True), dim),
                Segment(" ", base),
                Segment(fit(compact_size(row.size), columns.size, right=True), dim),
            ]
        strip = Strip(segments).adjust_cell_length(width, base)
        if is_cursor:
            cursor = self._style("request-table--cursor")
            strip = Strip(Segment.apply_style(strip, post_style=cursor), width)
        return strip
