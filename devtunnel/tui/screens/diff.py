"""Compare two exchanges: headers and bodies, side by side or unified, with fields to ignore."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from rich.cells import chop_cells
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Input, Static
from textual.worker import Worker, get_current_worker

from devtunnel.capture.diff import DiffLine, ExchangeDiff, SectionDiff, diff_exchanges
from devtunnel.capture.model import Exchange
from devtunnel.capture.outcome import uncounted_headers
from devtunnel.tui.failures import tell_failure
from devtunnel.tui.render import escape_line
from devtunnel.tui.screens.detail import TitleLine, exchange_title
from devtunnel.tui.screens.lines import LinesView
from devtunnel.tui.widgets.footer import Footer
from devtunnel.values.sizes import format_size

__all__ = ["DiffScreen", "DiffLines", "DiffSettings", "parse_ignore"]

Mode = Literal["side", "unified"]


@dataclass
class DiffSettings:
    """How diffs are shown; the app keeps one for the session, so each diff opens as the last one was left."""

    mode: Mode = "side"
    """``side`` (side by side) or ``unified``."""
    ignore: tuple[str, ...] = ()
    """Fields left out of the comparison (JSON keys, form fields, header names)."""

_TAG_STYLE = {"-": "red", "+": "green", "?": "dim yellow", " ": ""}
_SIDE_STYLE = {"-": "on #3c1618", "+": "on #15351f", " ": "", "": ""}
_SEPARATOR = " │ "
_CONTEXT = 3
"""Unchanged lines kept around each change, in either view."""
SIDE_FOLD = 12
"""Unchanged lines side by side that fold into one note beyond the context (unified: any)."""


def parse_ignore(value: str) -> tuple[str, ...]:
    """Field names from the ignore input: separated by commas or spaces, blanks dropped."""
    return tuple(name for name in re.split(r"[,\s]+", value) if name)


# A row is (kind, left tag, left text, right tag, right text); kind is "title", "note", "line",
# or "more": the rest of a changed line folded at the column's width.
_Row = tuple[str, str, str, str, str]


def _note(text: str) -> _Row:
    return ("note", "", text, "", "")


def _folded(section: SectionDiff, context: int = _CONTEXT, least: int = 1) -> list[DiffLine | str]:
    """The section's lines with ``context`` unchanged lines around each change; a longer
    unchanged run of ``least`` lines or more is one note (``@@ N unchanged lines``) in its place."""
    lines = section.lines
    changed = [i for i, line in enumerate(lines) if line.tag != " "]
    keep = {j for i in changed for j in range(i - context, i + context + 1)}
    out: list[DiffLine | str] = []
    run: list[DiffLine] = []

    def end_run() -> None:
        if len(run) >= least:
            out.append(f"@@ {len(run)} unchanged line{'s' if len(run) > 1 else ''}")
        else:
            out.extend(run)
        run.clear()

    for i, line in enumerate(lines):
        if i not in keep:
            run.append(line)
            continue
        end_run()
        out.append(line)
    end_run()
    return out


def _side_rows(section: SectionDiff) -> list[_Row]:
    """Pair each run of removed lines with the run of added lines that follows it."""
    rows: list[_Row] = []
    removed: list[str] = []
    added: list[str] = []

    def flush() -> None:
        for i in range(max(len(removed), len(added))):
            left = removed[i] if i < len(removed) else None
            right = added[i] if i < len(added) else None
            rows.append(("line", "" if left is None else "-", left or "", "" if right is None else "+", right or ""))
        removed.clear()
        added.clear()

    # Runs shorter than SIDE_FOLD stay whole (a section of headers reads best entire); a longer
    # one folds: two changes far apart in a document of 100,000 lines are a screen apart.
    for line in _folded(section, least=SIDE_FOLD):
        if isinstance(line, str):
            flush()
            rows.append(_note(line))
        elif line.tag == "-":
            if added:
                flush()
            removed.append(line.text)
        elif line.tag == "+":
            added.append(line.text)
        else:
            flush()
            rows.append(_note(line.text) if line.tag == "?" else ("line", " ", line.text, " ", line.text))
    flush()
    return rows


def _unified_rows(section: SectionDiff) -> list[_Row]:
    """Changed lines with the unchanged lines around them; longer runs fold into a note."""
    return [_note(line) if isinstance(line, str) else _note(line.text) if line.tag == "?"
            else ("line", line.tag, line.text, "", "") for line in _folded(section)]


def _binary_rows(section: SectionDiff) -> list[_Row]:
    size_a, size_b = section.size_a or 0, section.size_b or 0
    rows = [
        _note(f"size    A: {format_size(size_a)} ({size_a} B)    B: {format_size(size_b)} ({size_b} B)"),
        _note(f"sha256  A: {section.sha_a}"),
        _note(f"        B: {section.sha_b}"),
    ]
    # The section's notes: where the bodies first differ, and any body recorded only in part.
    return rows + [_note(line.text) for line in section.lines if line.tag == "?"]


def _section_rows(section: SectionDiff, mode: Mode) -> list[_Row]:
    rows: list[_Row] = [("title", "", f"{section.title} ({section.kind})", "", "")]
    if section.identical:
        rows.append(_note("identical"))
        if not any(line.tag in "-+" for line in section.lines):
            return rows + [_note(line.text) for line in section.lines if line.tag == "?"]
        # Only headers that are not counted differ (Date ...): shown, with the note saying so.
    if section.kind == "binary":
        return rows + _binary_rows(section)
    return rows + (_side_rows(section) if mode == "side" else _unified_rows(section))


def _fold_side(rows: list[_Row], room: int, width: int) -> list[_Row]:
    """Side-by-side rows folded at ``room`` cells a half, and notes at ``width`` cells, so that no
    value is cut off: changed or not (an unchanged header is folded alike on both sides), a value
    reads whole down the rows, as the detail screen shows it."""
    folded: list[_Row] = []
    for row in rows:
        kind, left_tag, left, right_tag, right = row
        if kind == "note":
            notes = chop_cells(escape_line(left), width - 2) or [""]
            folded += [_note(note) for note in notes]
            continue
        if kind != "line":
            folded.append(row)
            continue
        lefts = chop_cells(escape_line(left), room) or [""]
        rights = chop_cells(escape_line(right), room) or [""]
        if len(lefts) == len(rights) == 1:
            folded.append(row)
            continue
        for i in range(max(len(lefts), len(rights))):
            has_left, has_right = i < len(lefts), i < len(rights)
            folded.append(("line" if i == 0 else "more", left_tag if has_left else "", lefts[i] if has_left else "",
                           right_tag if has_right else "", rights[i] if has_right else ""))
    return folded


class DiffLines:
    """A diff as rows for :class:`LinesView`: side by side in ``column``-wide halves, or unified."""

    def __init__(self, diff: ExchangeDiff, mode: Mode, width: int) -> None:
        self.mode: Mode = mode
        self._rows = [row for section in diff.sections for row in _section_rows(section, mode)]
        # Each half gets what is left after the separator; at least 20 cells so a row stays readable.
        self.column = max((width - len(_SEPARATOR)) // 2, 20)
        if mode == "side":
            self._width = self.column * 2 + len(_SEPARATOR)
            self._rows = _fold_side(self._rows, self.column - 2, self._width)
        else:
            self._width = max((len(escape_line(row[2])) + 2 for row in self._rows), default=0)

    @property
    def width(self) -> int:
        """Cells in the widest row."""
        return self._width

    def __len__(self) -> int:
        return len(self._rows)

    def _cell(self, tag: str, text: str, *, more: bool = False) -> Text:
        # The rest of a folded line keeps its side's colour, without repeating the tag.
        cell = Text(f"{' ' if more or not tag else tag} {escape_line(text)}", style=_SIDE_STYLE.get(tag, ""),
                    no_wrap=True, end="")
        if tag in ("-", "+") and not more:
            cell.stylize(_TAG_STYLE[tag], 0, 1)
        cell.truncate(self.column, overflow="ellipsis", pad=True)
        return cell

    def line(self, index: int) -> Text:
        """Row ``index`` as styled text."""
        kind, left_tag, left, right_tag, right = self._rows[index]
        if kind == "title":
            return Text(f"── {escape_line(left)} ", style="bold cyan", no_wrap=True, end="")
        if kind == "note":
            return Text(f"  {escape_line(left)}", style="italic dim", no_wrap=True, end="")
        if self.mode == "unified":
            return Text(f"{left_tag} {escape_line(left)}", style=_TAG_STYLE.get(left_tag, ""), no_wrap=True, end="")
        more = kind == "more"
        row = self._cell(left_tag, left, more=more)
        row.append(_SEPARATOR, "dim")
        row.append_text(self._cell(right_tag, right, more=more))
        return row


class DiffScreen(Screen[None]):
    """The differences between two exchanges, section by section (headers, then bodies).

    | Key | Action |
    | :- | :- |
    | u | Toggle side-by-side and unified. |
    | i | Edit the fields to ignore (JSON keys, form fields, header names); the diff follows as you type. |
    | enter | (in the ignore field) Back to the diff. |
    | escape | (in the ignore field) Back to the diff, the field hidden unless it names fields. |
    | escape, q | Close. |
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close"),
        Binding("u", "toggle_mode", "Side/unified"),
        Binding("i", "ignore", "Ignore fields"),
    ]

    DEFAULT_CSS = """
    DiffScreen {
        .diff-title { height: 1; padding: 0 1; background: $panel; }
        #ignore { display: none; height: 3; }
        #ignore.shown { display: block; }
        #diff-status { height: 1; padding: 0 1; color: $text-muted; }
        #diff { height: 1fr; }
    }
    """

    def __init__(self, a: Exchange, b: Exchange, ignore: Sequence[str] = (), *,
                 settings: DiffSettings | None = None, volatile: Sequence[str] = uncounted_headers()) -> None:
        super().__init__()
        self.a = a
        self.b = b
        self.volatile = tuple(volatile)
        """Response headers shown when they differ but not counted (``Date`` ..., and the
        configured ``replay.ignore_headers``), as ``devtunnel diff`` counts them."""
        self.settings = settings if settings is not None else DiffSettings(ignore=tuple(ignore))
        """Mode and ignored fields; changes here are written back (for the next diff)."""
        self.ignore: tuple[str, ...] = tuple(ignore) or self.settings.ignore
        """The fields left out of the comparison."""
        self.mode: Mode = self.settings.mode
        """``side`` (side by side) or ``unified``."""
        self.result: ExchangeDiff | None = None
        """The diff on screen (None while the first one is computed)."""

    def compose(self) -> ComposeResult:
        yield TitleLine(lambda width: self._title("A ", "bold red", self.a, width), classes="diff-title")
        yield TitleLine(lambda width: self._title("B ", "bold green", self.b, width), classes="diff-title")
        yield Input(", ".join(self.ignore), id="ignore", placeholder="fields to ignore: id, timestamp, Date")
        yield Static("", id="diff-status")
        yield LinesView(id="diff")
        yield Footer(compact=True)

    @staticmethod
    def _title(lead: str, style: str, exchange: Exchange, width: int) -> Text:
        return Text.assemble((lead, style), exchange_title(exchange, width - len(lead)), no_wrap=True,
                             overflow="ellipsis", end="")

    def on_mount(self) -> None:
        if self.ignore:
            self.query_one("#ignore", Input).add_class("shown")
        self.query_one("#diff", LinesView).focus()
        self._compute(self.ignore)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        tell_failure(self, event)

    @work(thread=True, exclusive=True, group="diff", exit_on_error=False)
    def _compute(self, ignore: tuple[str, ...]) -> None:
        # Bodies can be megabytes: diff them off the event loop so typing stays responsive.
        diff = diff_exchanges(self.a, self.b, ignore=ignore, volatile=self.volatile)
        worker = get_current_worker()
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show, diff, ignore, worker)

    def _show(self, diff: ExchangeDiff, ignore: tuple[str, ...], worker: Worker[None]) -> None:
        # Asked again here, on the event loop where a newer diff cancels this one: between the
        # thread's check and this call, a newer diff may have been started and even shown.
        if worker.is_cancelled:
            return
        self.result = diff
        self.ignore = self.settings.ignore = ignore
        self._draw()

    def _draw(self) -> None:
        if self.result is None:
            return
        view = self.query_one("#diff", LinesView)
        # A new diff for the same pair (resize, ignore fields) keeps the place being read.
        # The vertical scrollbar's columns are left free: the two halves always fit beside it.
        width = (view.size.width or self.size.width) - view.styles.scrollbar_size_vertical
        view.show(DiffLines(self.result, self.mode, width), keep_position=True)
        changed = [s.title for s in self.result.sections if not s.identical]
        status = "identical" if not changed else f"{len(changed)} of {len(self.result.sections)} sections differ"
        if self.ignore:
            status += " · ignoring " + ", ".join(self.ignore)
        status += " · side by side" if self.mode == "side" else " · unified"
        self.query_one("#diff-status", Static).update(Text(escape_line(status), end=""))

    def on_resize(self, event: Resize) -> None:
        if self.mode == "side":
            self.call_after_refresh(self._draw)

    @on(Input.Changed, "#ignore")
    def _ignore_changed(self, event: Input.Changed) -> None:
        fields = parse_ignore(event.value)
        if fields != self.ignore:
            self._compute(fields)

    @on(Input.Submitted, "#ignore")
    def _ignore_done(self) -> None:
        self.query_one("#diff", LinesView).focus()

    def action_close(self) -> None:
        """Close the screen; from the ignore field, back to the diff (a second escape closes)."""
        field = self.query_one("#ignore", Input)
        if field.has_focus:
            # Fields typed stay ignored (the diff already follows them); an empty field is put away.
            field.set_class(bool(parse_ignore(field.value)), "shown")
            self.query_one("#diff", LinesView).focus()
            return
        self.dismiss(None)

    def action_toggle_mode(self) -> None:
        """Switch between side-by-side and unified."""
        self.mode = self.settings.mode = "unified" if self.mode == "side" else "side"
        self._draw()

    def action_ignore(self) -> None:
        """Show the ignore field and put the cursor in it."""
        field = self.query_one("#ignore", Input)
        field.add_class("shown")
        field.focus()
