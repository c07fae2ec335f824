"""The tunnels panel: each tunnel's public URL, target, provider, state, request count and rate,
and under the chosen tunnel the agent's latest hint about a dev server refusing it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from devtunnel.tui.backend import TunnelView
from devtunnel.tui.render import escape_control
from devtunnel.tui.supervisor import AgentStatus
from devtunnel.values.app_state import app_state_words
from devtunnel.values.terminal import escape

RATE_WINDOW = 10.0
"""Seconds of request counts the rate is averaged over."""

HINT_TIMEOUT = 20.0
"""Seconds a new hint's notification stays up: long enough to read a sentence naming a setting."""

HINTS_TOLD = 3
"""New hints of one tunnel one notification spells out; it counts the rest (up to 16 a tunnel)."""


_APP_STYLES = {"ready": "tunnels--online", "starting": "tunnels--starting", "restarting": "tunnels--reconnecting",
               "crashed": "tunnels--reconnecting", "exited": "tunnels--dim", "stopped": "tunnels--dim"}


def app_state_text(tunnel: TunnelView) -> str:
    """``ready``, ``restarting (2)``, ``exited (0)``, ``failed: cannot start ...``: the app's state as the panel shows it."""
    return app_state_words(tunnel.app_state, restarts=tunnel.app_restarts, exit_code=tunnel.app_exit_code,
                           message=escape(tunnel.app_message))


def held_text(waiting: int) -> str:
    """``1 request held``, ``12 requests held``: requests waiting for the app or the target (``--hold``)."""
    return f"{waiting} request{'' if waiting == 1 else 's'} held"


class TunnelsPanel(Widget, can_focus=True):
    """The agent's state and one line per tunnel; the cursor picks the tunnel keys act on.

    | Key | Action |
    | :- | :- |
    | up / k, down / j | choose a tunnel (the keys of the request table) |
    | s | stop the tunnel, or start a stopped one again (posts ``Action``) |
    | R | reconnect the tunnel (or start a stopped one again) |
    | y | copy its public URL |
    | l | the logs of the app it runs (``--run``) |
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "move(-1)", "Previous tunnel", show=False),
        Binding("down,j", "move(1)", "Next tunnel", show=False),
        Binding("s", "tunnel('stop')", "Stop", tooltip="Stop tunnel"),
        Binding("R", "tunnel('restart')", "Restart", tooltip="Restart tunnel"),
        Binding("y", "tunnel('copy')", "Copy URL"),
        Binding("l", "tunnel('logs')", "Logs", tooltip="Logs of the tunnel's app"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "tunnels--dim", "tunnels--online", "tunnels--starting", "tunnels--reconnecting",
        "tunnels--failed", "tunnels--cursor", "tunnels--url",
    }

    DEFAULT_CSS = """
    TunnelsPanel {
        height: auto;
        max-height: 6;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        & > .tunnels--dim { color: $text-muted; }
        & > .tunnels--online { color: $text-success; }
        & > .tunnels--starting { color: $text-primary; }
        & > .tunnels--reconnecting { color: $text-warning; }
        & > .tunnels--failed { color: $text-error; }
        & > .tunnels--url { text-style: bold; }
        &:focus > .tunnels--cursor { text-style: reverse; }
    }
    """

    cursor: reactive[int] = reactive(0)
    """Index of the chosen tunnel."""

    class Action(Message):
        """A key asked to ``stop``, ``restart``, ``copy`` the URL of, or see the ``logs`` of tunnel ``tunnel``."""

        def __init__(self, panel: TunnelsPanel, action: str, tunnel: TunnelView) -> None:
            super().__init__()
            self.panel = panel
            self.action = action
            self.tunnel = tunnel

        @property
        def control(self) -> TunnelsPanel:
            return self.panel

    def __init__(self, *, clock: Callable[[], float] = time.time, id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self.tunnels: dict[str, TunnelView] = {}
        self.agent: AgentStatus | None = None
        """The supervised agent's status (None when the inspector runs without an agent)."""
        self._samples: dict[str, deque[tuple[float, int]]] = {}
        self._top = 0
        """The first tunnel shown when they are more than the panel's lines."""
        self._chosen: str | None = None
        """The tunnel the cursor was put on: the cursor follows it when the list changes order (a
        restarted tunnel comes back last) and goes back to it when it returns after a stop."""

    def update_tunnels(self, tunnels: Iterable[TunnelView], *, replace: bool = False) -> None:
        """Merge (or with ``replace``, set) the tunnels shown."""
        if self._chosen is None and self.current is not None:
            self._chosen = self.current.name
        old = self.tunnels
        if replace:
            self.tunnels = {}
        now = self._clock()
        for tunnel in tunnels:
            self._tell_hints(tunnel, old.get(tunnel.name))
            if tunnel.state == "stopped":  # listed, s starts it again; gone at the next poll unless stopped here
                self._samples.pop(tunnel.name, None)
            self.tunnels[tunnel.name] = tunnel
            samples = self._samples.setdefault(tunnel.name, deque())
            if samples and tunnel.requests < samples[-1][1]:
                samples.clear()  # counted afresh (a restart): the old counts say nothing of the new rate
            samples.append((now, tunnel.requests))
            while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW:
                samples.popleft()
        names = list(self.tunnels)
        # Not through watch_cursor: a chosen tunnel away for a moment (stopped, then started again) stays chosen.
        self.set_reactive(TunnelsPanel.cursor, names.index(self._chosen) if self._chosen in names
                          else min(self.cursor, max(0, len(names) - 1)))
        self.refresh(layout=True)

    def _tell_hints(self, tunnel: TunnelView, before: TunnelView | None) -> None:
        """Hints new to the panel come up whole in one notification, a line each: the panel's line
        cuts them, and an inspector opened on an agent holding many says them once, not 16 times."""
        new = [hint for hint in tunnel.hints if before is None or hint not in before.hints]
        if not new:
            return
        lines = [escape_control(hint) for hint in new[:HINTS_TOLD]]
        if len(new) > HINTS_TOLD:
            more = len(new) - HINTS_TOLD
            lines.append(f"and {more} more hint{'s' if more > 1 else ''}: GET /api/tunnels/{escape_control(tunnel.name)} lists them")
        self.notify("\n".join(lines), title=f"tunnel {escape(tunnel.name)}", severity="warning",
                    timeout=HINT_TIMEOUT, markup=False)

    def set_agent(self, status: AgentStatus | None) -> None:
        """Show the supervised agent's state."""
        self.agent = status
        self.refresh(layout=True)

    def running(self, name: str) -> bool:
        """Whether tunnel ``name`` is listed and not stopped."""
        tunnel = self.tunnels.get(name)
        return tunnel is not None and tunnel.state != "stopped"

    def rate(self, name: str) -> float:
        """Requests per second of tunnel ``name`` over the last few samples."""
        samples = self._samples.get(name)
        if not samples or len(samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    @property
    def current(self) -> TunnelView | None:
        """The tunnel under the cursor."""
        names = list(self.tunnels)
        return self.tunnels[names[self.cursor]] if 0 <= self.cursor < len(names) else None

    def action_move(self, step: int) -> None:
        self.cursor = max(0, min(len(self.tunnels) - 1, self.cursor + step))
        self.refresh(layout=True)  # the hint line goes with the cursor

    def watch_cursor(self) -> None:
        self._chosen = self.current.name if self.current is not None else None

    def action_tunnel(self, action: str) -> None:
        if self.current is not None:
            self.post_message(self.Action(self, action, self.current))

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(name, partial=True)

    def _agent_line(self) -> Text | None:
        status = self.agent
        if status is None or (status.state == "running" and not status.restarts):
            return None
        line = Text("agent ", style=self._style("tunnels--dim"))
        style = {"running": "tunnels--online", "starting": "tunnels--starting",
                 "restarting": "tunnels--reconnecting"}.get(status.state, "tunnels--failed")
        line.append(status.state, style=self._style(style))
        line.append(f"  restarts: {status.restarts}")
        if status.message:
            line.append(f"  {escape(status.message)}", style=self._style("tunnels--dim"))
        return line

    def _tunnel_line(self, tunnel: TunnelView, is_cursor: bool, *, compact: bool = False) -> Text:
        """One tunnel's line; ``compact`` when the whole line is too wide (80 columns): the URLs
        without ``http://`` and the app's state (a crash loop) before the counts, which the
        ellipsis cuts instead."""
        dim = self._style("tunnels--dim")
        line = Text(no_wrap=True, overflow="ellipsis")
        state_style = self._style(f"tunnels--{tunnel.state}" if tunnel.state in
                                  ("online", "starting", "reconnecting", "failed") else "tunnels--dim")
        line.append("● ", style=state_style)
        url, target = tunnel.public_url or tunnel.name, tunnel.target
        if compact:
            url, target = url.removeprefix("http://"), target.removeprefix("http://")
        line.append(escape(url), style=self._style("tunnels--url"))
        line.append(" → ", style=dim)
        line.append(escape(target))
        if tunnel.via:
            line.append(f"  via {escape(tunnel.via)}", style=dim)
            if tunnel.via_state and tunnel.via_state != "online":
                line.append(f" ({escape(tunnel.via_state)})", style=dim)
        line.append("  ")
        state = tunnel.state
        if state == "reconnecting" and tunnel.next_retry_at is not None:
            state += f" (retry in {max(0, tunnel.next_retry_at - self._clock()):.0f}s)"
        elif state == "failed" and tunnel.error:
            state += f": {escape_control(tunnel.error)}"  # escaped by the API already: backslashes kept
        elif state == "stopped":
            state += " (s starts it again)"
        line.append(state, style=state_style)
        counts = Text(f"  {tunnel.requests} req  {self.rate(tunnel.name):.1f}/s", style=dim)
        app = Text()
        if tunnel.app_state:
            app.append("  app ", style=dim)
            app.append(app_state_text(tunnel), style=self._style(_APP_STYLES.get(tunnel.app_state, "tunnels--failed")))
        if tunnel.waiting:  # before the app's state, whose message the ellipsis may cut
            app = Text.assemble(Text(f"  {held_text(tunnel.waiting)}", style=self._style("tunnels--reconnecting")), app)
        # Whether the line fits is told without the app's message (why it failed or crashed): that
        # comes last and the ellipsis may cut it, but not the state before it (room is kept for
        # ": " and the ellipsis); the URLs and the counts stay as on other lines.
        message = cell_len(app_state_text(tunnel)) - cell_len(app_state_words(
            tunnel.app_state, restarts=tunnel.app_restarts, exit_code=tunnel.app_exit_code)) if tunnel.app_state else 0
        room = line.cell_len + counts.cell_len + app.cell_len - message + (3 if message else 0)
        if app and not compact and room > self.content_size.width:
            return self._tunnel_line(tunnel, is_cursor, compact=True)
        if compact:
            line.append_text(app)
            line.append_text(counts)
        else:
            line.append_text(counts)
            line.append_text(app)
        if is_cursor:
            line.stylize(self._style("tunnels--cursor"))
        return line

    def _hint_line(self) -> Text | None:
        """The latest hint of the tunnel under the cursor (as the agent escaped it), or None."""
        tunnel = self.current
        if tunnel is None or not tunnel.hints:
            return None
        return Text(f"  ⚠ {escape_control(tunnel.hints[-1])}", style=self._style("tunnels--reconnecting"),
                    no_wrap=True, overflow="ellipsis")

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        # Every line, whatever the window render() shows: max-height caps it.
        return (self._agent_line() is not None) + max(1, len(self.tunnels)) + (self._hint_line() is not None)

    def _window(self, room: int) -> range:
        """The tunnels shown when only ``room`` lines fit: a window that keeps the cursor in it."""
        count = len(self.tunnels)
        self._top = max(0, min(self._top, self.cursor, count - room))
        if self.cursor >= self._top + room:
            self._top = self.cursor - room + 1
        return range(self._top, self._top + room)

    def render(self) -> Text:
        lines = []
        agent = self._agent_line()
        if agent is not None:
            lines.append(agent)
        tunnels = list(self.tunnels.values())
        hint = self._hint_line()
        room = self.content_size.height - len(lines) - (hint is not None)
        shown = range(len(tunnels))
        if 1 < room < len(tunnels):
            # More tunnels than lines (max-height): the cursor's stays in sight, so s and R act on
            # a tunnel on screen, and the last line says how many there are.
            shown = self._window(room - 1)
        for index in shown:
            lines.append(self._tunnel_line(tunnels[index], index == self.cursor))
            if index == self.cursor and hint is not None:
                lines.append(hint)
        if len(shown) < len(tunnels):
            lines.append(Text(f"{len(tunnels)} tunnels, {shown.start + 1}-{shown.stop} shown: ↑↓ scroll",
                              style=self._style("tunnels--dim")))
        if not self.tunnels:
            hint = "no tunnel: press n to start one" if self.agent is not None else "stored captures (no agent)"
            lines.append(Text(hint, style=self._style("tunnels--dim")))
        return Text("\n").join(lines)
