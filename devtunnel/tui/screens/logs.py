"""The Logs view: the output of the app a tunnel runs, followed live, with search.

The lines come from the agent API as a stream (``GET /api/tunnels/NAME/logs?follow=1``): the
kept lines first, then each line as the app writes it, drawn as it arrives. Lines the agent had
to drop because the view read too slowly are counted in the status line. Every line is the
app's own output and is escaped before it is drawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Input, RichLog, Static
from textual.worker import Worker

from devtunnel.errors import DevtunnelError
from devtunnel.tui.backend import LogBatch
from devtunnel.tui.failures import tell_failure
from devtunnel.tui.widgets.footer import Footer
from devtunnel.values.terminal import escape

__all__ = ["RETRY_INTERVAL", "KEPT_LINES", "Follow", "LogsScreen", "line_text"]

RETRY_INTERVAL = 1.0
"""Seconds before following the log again after the agent could not be read or ended the stream."""
KEPT_LINES = 5000
"""Lines the view keeps (the oldest go first)."""

Follow = Callable[[str], AsyncIterator[LogBatch]]
"""Follows the app's output: the kept lines containing a text (all for ``""``), then each new one."""

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


class LogsScreen(Screen[None]):
    """The app's output of one tunnel, newest at the bottom, as the app writes it (the agent
    API streams it: no polling); after a failure it follows again ``retry`` seconds later.

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

    def __init__(self, tunnel: str, follow: Follow, *, retry: float = RETRY_INTERVAL) -> None:
        super().__init__()
        self.tunnel = tunnel
        self._follow = follow
        self._retry = retry
        self.search = ""
        self.following = True
        self.lines: list[dict[str, Any]] = []
        """The lines shown."""
        self.problem = ""
        self.dropped = 0
        """Lines the agent dropped because they were not read fast enough."""

    def compose(self) -> ComposeResult:
        yield Static(f"Logs: {escape(self.tunnel)}'s app (stdout and stderr)", id="logs-title", markup=False)
        yield RichLog(wrap=True, markup=False, highlight=False, auto_scroll=True, max_lines=KEPT_LINES, id="logs")
        yield Input(placeholder="search the app's output (enter keeps it, esc clears)", id="logs-search")
        yield Static("", id="logs-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.follow_logs()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        tell_failure(self, event)

    @work(group="logs", exclusive=True, exit_on_error=False)
    async def follow_logs(self) -> None:
        """Follow the log (for the current search) until the view closes or the search changes."""
        search = self.search
        while True:
            fresh = True  # the agent sends the kept lines again: they replace what is shown
            try:
                async with contextlib.aclosing(self._follow(search)) as batches:
                    async for batch in batches:
                        if fresh:
                            self._clear()
                            fresh = False
                        self.problem = ""
                        self._show(batch)
                self.problem = "the app's log ended (its tunnel stopped?); following again"
            except DevtunnelError as exc:
                self.problem = str(exc)
            self._status()
            await asyncio.sleep(self._retry)

    def _clear(self) -> None:
        self.lines = []
        self.dropped = 0
        self.query_one(RichLog).clear()

    def _show(self, batch: LogBatch) -> None:
        view = self.query_one(RichLog)
        for line in batch.lines:
            view.write(line_text(line, self.search), scroll_end=self.following)
        self.lines += batch.lines
        del self.lines[:-KEPT_LINES]
        self.dropped += batch.dropped
        self._status()

    def _status(self) -> None:
        parts = [f"{len(self.lines)} lines", "following" if self.following else "paused (f follows)"]
        if self.dropped:
            parts.append(f"{self.dropped} lines dropped (read too slowly)")
        if self.search:
            parts.append(f"search: {escape(self.search)}")
        if self.problem:
            parts.append(escape(self.problem))
        self.query_one("#logs-status", Static).update("  ·  ".join(parts))

    def _restart(self) -> None:
        self._clear()
        self._status()
        self.follow_logs()

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
