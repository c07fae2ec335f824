"""The Logs view: the output of the app a tunnel runs, followed live, with search.

The lines come from the agent API (``GET /api/tunnels/NAME/logs``), read again every
``POLL_INTERVAL`` seconds by a worker; only new lines are added to the view. Every line is the
app's own output and is escaped before it is drawn.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Input, RichLog, Static
from textual.worker import Worker

from devtunnel.errors import DevtunnelError
from devtunnel.tui.failures import tell_failure
from devtunnel.values.terminal import escape

__all__ = ["POLL_INTERVAL", "LogsScreen", "line_text"]

POLL_INTERVAL = 1.0
"""Seconds between two reads of the app's log."""

Fetch = Callable[[str], Awaitable[list[dict[str, Any]]]]
"""Reads the kept lines containing a text (all for ``""``)."""

_STREAM_STYLES = {"out": "", "err": "bold red", "devtunnel": "italic cyan"}


def line_text(line: dict[str, Any], search: str = "") -> Text:
    """One log line for the view: time, stream, the escaped text with ``search`` matches marked."""
    when = line.get("time")
    clock = time.strftime("%H:%M:%S", time.localtime(when)) if isinstance(when, int | float) else "--:--:--"
    stream = str(line.get("stream", ""))
    text = Text(no_wrap=False)
    text.append(clock + " ", style="dim")
    text.append(f"{stream if stream in ('out', 'err') else '---':<4}", style=_STREAM_STYLES.get(stream, "dim"))
    body = Text(escape(str(line.get("text", ""))), style="italic cyan" if stream == "devtunnel" else "")
    if search:
        body.highlight_words([search], style="reverse", case_sensitive=False)
    text.append_text(body)
    return text


def _key(line: dict[str, Any]) -> tuple[Any, Any, Any]:
    return line.get("time"), line.get("stream"), line.get("text")


class LogsScreen(Screen[None]):
    """The app's output of one tunnel, newest at the bottom.

    | Key | Action |
    | :- | :- |
    | / | search (only matching lines; enter keeps it, esc clears it) |
    | f | follow new lines on / off |
    | esc / q | close |
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("escape,q", "close", "Close"),
    ]

    DEFAULT_CSS = """
    LogsScreen #logs-title { height: 1; padding: 0 1; background: $panel; text-style: bold; }
    LogsScreen #logs-status { height: 1; padding: 0 1; color: $text-muted; }
    LogsScreen RichLog { height: 1fr; padding: 0 1; }
    LogsScreen Input { display: none; }
    LogsScreen.searching Input { display: block; }
    """

    def __init__(self, tunnel: str, fetch: Fetch, *, poll: bool = True) -> None:
        super().__init__()
        self.tunnel = tunnel
        self._fetch = fetch
        self._poll = poll
        self.search = ""
        self.following = True
        self.lines: list[dict[str, Any]] = []
        """The lines shown."""
        self.problem = ""

    def compose(self) -> ComposeResult:
        yield Static(f"Logs: {escape(self.tunnel)}'s app (stdout and stderr)", id="logs-title", markup=False)
        yield RichLog(wrap=True, markup=False, highlight=False, auto_scroll=True, max_lines=5000, id="logs")
        yield Input(placeholder="search the app's output (enter keeps it, esc clears)", id="logs-search")
        yield Static("", id="logs-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_logs()
        if self._poll:
            self.set_interval(POLL_INTERVAL, self.refresh_logs)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        tell_failure(self, event)

    @work(group="logs", exclusive=True, exit_on_error=False)
    async def refresh_logs(self) -> None:
        """Read the log again and show the new lines."""
        search = self.search
        try:
            lines = await self._fetch(search)
        except DevtunnelError as exc:
            self.problem = str(exc)
            self._status()
            return
        if search != self.search:
            return  # the search changed meanwhile: its own read follows
        self.problem = ""
        self._show(lines)

    def _show(self, lines: list[dict[str, Any]]) -> None:
        view = self.query_one(RichLog)
        start = 0
        if self.lines:
            last = _key(self.lines[-1])
            index = next((i for i in range(len(lines) - 1, -1, -1) if _key(lines[i]) == last), None)
            if index is None:
                view.clear()
            else:
                start = index + 1
        for line in lines[start:]:
            view.write(line_text(line, self.search), scroll_end=self.following)
        self.lines = lines
        self._status()

    def _status(self) -> None:
        parts = [f"{len(self.lines)} lines", "following" if self.following else "paused (f follows)"]
        if self.search:
            parts.append(f"search: {escape(self.search)}")
        if self.problem:
            parts.append(escape(self.problem))
        self.query_one("#logs-status", Static).update("  ·  ".join(parts))

    def _restart(self) -> None:
        self.lines = []
        self.query_one(RichLog).clear()
        self.refresh_logs()

    def action_search(self) -> None:
        self.add_class("searching")
        self.query_one(Input).focus()

    def action_toggle_follow(self) -> None:
        self.following = not self.following
        log = self.query_one(RichLog)
        log.auto_scroll = self.following
        if self.following:
            log.scroll_end(animate=False)
        self._status()

    def action_close(self) -> None:
        if self.has_class("searching"):
            self.query_one(Input).value = ""
            self._end_search()
            return
        self.dismiss(None)

    def _end_search(self) -> None:
        self.remove_class("searching")
        self.query_one(RichLog).focus()
        if self.search != self.query_one(Input).value:
            self.search = self.query_one(Input).value
            self._restart()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._end_search()
