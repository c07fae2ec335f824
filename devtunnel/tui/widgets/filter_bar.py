"""The filter bar: the capture filter language, applied as you type, with inline errors and history."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.cells import cell_len
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import Input, Static

from devtunnel.errors import FilterSyntaxError
from devtunnel.tui.render import message_text
from devtunnel.values.paths import make_private_folder

HISTORY_SIZE = 50

PLACEHOLDER = "filter: method:POST status:>=400 …  (/ to focus, ? for help)"
"""What the empty bar shows (dim): an example, and the keys to use it."""


class FilterHistory:
    """Recent filter expressions, newest last, kept in a small text file (one per line)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: list[str] = []
        if path is not None:
            try:
                self.entries = [line for line in path.read_text("utf-8").splitlines() if line.strip()][-HISTORY_SIZE:]
            except (OSError, UnicodeDecodeError):
                self.entries = []  # history is a convenience: a broken file starts it afresh

    def add(self, expression: str) -> None:
        """Remember ``expression`` as the newest entry (moving it if it was already there)."""
        expression = expression.strip()
        if not expression or "\n" in expression:
            return
        if expression in self.entries:
            self.entries.remove(expression)
        self.entries = [*self.entries, expression][-HISTORY_SIZE:]
        if self.path is not None:
            try:
                make_private_folder(self.path.parent)
                self.path.write_text("\n".join(self.entries) + "\n", "utf-8")
            except OSError:
                pass  # a read-only state dir must not break filtering


class FilterBar(Vertical):
    """An input for a filter expression; valid expressions are applied after a short pause.

    | Key | Action |
    | :- | :- |
    | up / down | recall older / newer filters |
    | enter | apply now and remember the filter |
    | esc | clear the filter |
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "Older filter", show=False),
        Binding("down", "history(1)", "Newer filter", show=False),
        Binding("escape", "clear", "Clear filter"),
    ]

    DEFAULT_CSS = """
    FilterBar { height: auto; }
    FilterBar > Input, FilterBar > Input:focus { border: none; height: 1; padding: 0 1; }
    /* The hint must not read as a filter in force: dim and italic; a filter in force is bold on a tint. */
    FilterBar > Input > .input--placeholder { color: $text-disabled; text-style: italic; }
    FilterBar.-active > Input { text-style: bold; background-tint: $accent 25%; }
    FilterBar > #filter-error { display: none; color: $text-error; height: auto; padding: 0 1; }
    FilterBar.-invalid > #filter-error { display: block; }
    """

    DEBOUNCE = 0.15
    """Seconds of quiet typing before the expression is applied."""

    expression: reactive[str] = reactive("", init=False)
    """The last valid expression (what the table shows); a non-empty one gives the bar ``-active``."""
    error: reactive[FilterSyntaxError | None] = reactive(None, init=False)
    """The problem with the text in the input, if it does not parse."""

    class Applied(Message):
        """A valid filter was entered (or cleared); ``filter`` is the compiled expression."""

        def __init__(self, bar: FilterBar, expression: str, filter: object) -> None:
            super().__init__()
            self.bar = bar
            self.expression = expression
            self.filter = filter

        @property
        def control(self) -> FilterBar:
            return self.bar

    class Done(Message):
        """The user finished with the bar (enter or esc): focus can go back to the table."""

        def __init__(self, bar: FilterBar) -> None:
            super().__init__()
            self.bar = bar

        @property
        def control(self) -> FilterBar:
            return self.bar

    def __init__(self, history_path: Path | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.history = FilterHistory(history_path)
        self._history_index: int | None = None
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder=PLACEHOLDER, id="filter-input")
        yield Static("", id="filter-error")

    @property
    def input(self) -> Input:
        """The text input."""
        return self.query_one(Input)

    def focus_input(self) -> None:
        """Put the cursor in the input."""
        self.input.focus()

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(self.DEBOUNCE, self.apply_now)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.apply_now():
            self.history.add(self.expression)
            self._history_index = None
            self.post_message(self.Done(self))

    def apply_now(self) -> bool:
        """Parse the input now; apply it if valid, show the error inline otherwise."""
        from devtunnel.capture.filters import parse

        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        text = self.input.value
        try:
            compiled = parse(text)
        except FilterSyntaxError as exc:
            self.error = exc
            return False
        self.error = None
        if text != self.expression:
            self.expression = text
            self.post_message(self.Applied(self, text, compiled))
        return True

    def watch_expression(self, expression: str) -> None:
        self.set_class(bool(expression.strip()), "-active")

    def on_mount(self) -> None:
        # The input scrolls after its value changed (to the cursor): the caret follows.
        self.watch(self.input, "scroll_x", lambda _: self._show_error(), init=False)

    def on_resize(self) -> None:
        self._show_error()

    def watch_error(self, error: FilterSyntaxError | None) -> None:
        self.set_class(error is not None, "-invalid")
        self._show_error()

    def _show_error(self) -> None:
        """The error under the input: a caret under the offending column when the input shows
        it, else the message alone (its column says where)."""
        error = self.error
        message = self.query_one("#filter-error", Static)
        if error is None:
            message.update("")
            return
        text = f"{error.message} (column {error.position + 1})"
        # Cells, not characters (a wide character takes two), from the input's visible start;
        # both the input and the message have one cell of padding.
        column = cell_len(self.input.value[: error.position]) - round(self.input.scroll_x)
        width = self.input.content_size.width
        if 0 <= column < width:
            # The message after the caret, or before it when it would not fit on the line.
            before = column - cell_len(text) - 1
            text = " " * before + text + " ^" if column + 2 + cell_len(text) > width and before >= 0 else " " * column + "^ " + text
        message.update(message_text(text))

    def action_history(self, step: int) -> None:
        """Recall an older (-1) or newer (+1) filter into the input."""
        entries = self.history.entries
        if not entries:
            return
        index = len(entries) if self._history_index is None else self._history_index
        index = max(0, min(len(entries), index + step))
        self._history_index = index
        self.input.value = entries[index] if index < len(entries) else ""
        self.input.cursor_position = len(self.input.value)

    def action_clear(self) -> None:
        """Empty the input and show every request again."""
        self.input.value = ""
        self._history_index = None
        self.apply_now()
        self.post_message(self.Done(self))

    def on_descendant_blur(self) -> None:
        if self.error is None and self.expression:
            self.history.add(self.expression)
