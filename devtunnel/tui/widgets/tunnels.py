"""The tunnels panel: each tunnel's public URL, target, provider, state, request count and rate,
and under the chosen tunnel the agent's latest hint about a dev server refusing it."""

from __future__ import annotations

import time
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
from devtunnel.tui.widgets.stats import RequestRate
from devtunnel.values.app_state import app_state_words
from devtunnel.values.terminal import escape

HINT_TIMEOUT = 20.0
"""Seconds a new hint's notification stays up: long enough to read a sentence naming a setting."""

HINTS_TOLD = 3
"""New hints of one tunnel one notification spells out; it counts the rest (up to 16 a tunnel)."""


_APP_STYLES = {"ready": "tunnels--online", "starting": "tunnels--starting", "restarting": "tunnels--reconnecting",
               "crashed": "tunnels--reconnecting", "exited": "tunnels--dim", "stopped": "tunnels--dim"}


def app_state_text(tunnel: TunnelView) -> str:
    """``ready``, ``restarting (2)``, ``exited (0)``, ``failed: cannot start ...``: the app's state as the panel shows it."""
    return app_state_words(tunnel.app_state, restarts=tunnel.app_restarts, exit_code=tunnel.app_exit_code,
                           message=escape_control(tunnel.app_message))  # escaped by the API already


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

    The key bar offers what works on the tunnel under the cursor: ``s Start`` on a stopped one
    (``R`` starts it too), no tunnel key with no tunnel.

    A tunnel's ``N req`` counts the requests that came through it for the whole session, as the
    agent API's ``metrics.http.count`` does (replays, which do not come through the tunnel, are
    not counted): a stop and a start of the same name go on counting (the agent's own
    count starts again at 0 with each start). It is the stats strip's count (``RequestRate``),
    so it moves as requests arrive, a frame at a time, with the rates beside it, on top of what
    the agent had counted when the panel first saw the tunnel (an agent started before the
    inspector).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "move(-1)", "Previous tunnel", show=False),
        Binding("down,j", "move(1)", "Next tunnel", show=False),
        Binding("s", "tunnel('stop')", "Stop", tooltip="Stop tunnel"),
        Binding("s", "tunnel('start')", "Start", tooltip="Start a stopped tunnel again"),
        Binding("R", "tunnel('restart')", "Restart", tooltip="Restart tunnel"),
        Binding("R", "tunnel('start')", "Start", tooltip="Start a stopped tunnel again", show=False),
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

    def __init__(self, *, rate: RequestRate | None = None, clock: Callable[[], float] = time.time,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self.tunnels: dict[str, TunnelView] = {}
        self.agent: AgentStatus | None = None
        """The supervised agent's status (None when the inspector runs without an agent)."""
        self.request_rate = rate if rate is not None else RequestRate(clock=clock)
        """The requests a second of each tunnel: the stats strip's count, so the figures agree."""
        self.request_rate.listen(self.refresh)
        self._before: dict[str, int] = {}
        """Requests the agent had counted of each tunnel when the panel first saw it, beyond those
        the rate had named by then (an agent running before the inspector)."""
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
        for tunnel in tunnels:
            self._tell_hints(tunnel, old.get(tunnel.name))
            self.tunnels[tunnel.name] = tunnel
            self._before.setdefault(tunnel.name, max(0, tunnel.requests - self.request_rate.total(tunnel.name)))
        names = list(self.tunnels)
        # Not through watch_cursor: a chosen tunnel away for a moment (stopped, then started again) stays chosen.
        self.set_reactive(TunnelsPanel.cursor, names.index(self._chosen) if self._chosen in names
                          else min(self.cursor, max(0, len(names) - 1)))
        self.refresh_bindings()  # stopped, started, an app: the key bar follows
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

    def rate(self, name: str) -> int:
        """New requests of tunnel ``name`` in the last whole second, as the stats strip counts them."""
        return self.request_rate.last_second(name)

    def requests(self, name: str) -> int:
        """Requests of tunnel ``name`` so far, whatever stops and starts it had (the ``N req`` shown)."""
        return self._before.get(name, 0) + self.request_rate.total(name)

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
        self.refresh_bindings()  # the key bar offers what works on this tunnel

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action != "tunnel":
            return True
        tunnel = self.current
        if tunnel is None:
            return False
        stopped = tunnel.state == "stopped"
        return {"stop": not stopped, "start": stopped, "restart": not stopped}.get(
            str(parameters[0]) if parameters else "", True)

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

    def _fitted(self, tunnel: TunnelView, *, bare: bool = False) -> tuple[Text, int]:
        """One tunnel's line shortened as far as it must to fit (80 columns), and how far that is
        (``_shortened``); ``bare``: without ``http://`` whatever the level."""
        width = self.content_size.width
        for level in range(self.LEVELS):
            line, cuttable = self._shortened(tunnel, level, bare=bare)
            if width <= 0 or line.cell_len - cuttable <= width:
                break
        return line, level

    def _tunnel_line(self, tunnel: TunnelView, is_cursor: bool, *, bare: bool = False) -> Text:
        """One tunnel's line, fitted to the width."""
        line, _ = self._fitted(tunnel, bare=bare)
        if is_cursor:
            line.stylize(self._style("tunnels--cursor"))
        return line

    LEVELS = 4
    """How far a tunnel's line can be shortened (``_shortened``)."""

    def _shortened(self, tunnel: TunnelView, level: int, *, bare: bool = False) -> tuple[Text, int]:
        """The line at ``level`` of shortening, and how many of its cells the ellipsis may cut.

        0: whole. 1: the URLs without ``http://``, and the app's state (a crash loop) before the
        counts. 2: a stopped tunnel without ``(s starts it again)`` (the key bar says ``s Start``).
        3: without the rate. Past that the ellipsis cuts the end. The app's message (why it failed
        or crashed) comes last and the ellipsis may cut it, but not the state before it (room is
        kept for ``: `` and the ellipsis).
        """
        dim = self._style("tunnels--dim")
        line = Text(no_wrap=True, overflow="ellipsis")
        state_style = self._style(f"tunnels--{tunnel.state}" if tunnel.state in
                                  ("online", "starting", "reconnecting", "failed") else "tunnels--dim")
        line.append("● ", style=state_style)
        url, target = tunnel.public_url or tunnel.name, tunnel.target
        if level >= 1 or bare:
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
        elif state == "stopped" and level < 2:
            state += " (s starts it again)"
        line.append(state, style=state_style)
        counts = Text(f"  {self.requests(tunnel.name)} req", style=dim)
        if level < 3:
            counts.append(f"  {self.rate(tunnel.name)}/s")
        app = Text()
        if tunnel.app_state:
            app.append("  app ", style=dim)
            app.append(app_state_text(tunnel), style=self._style(_APP_STYLES.get(tunnel.app_state, "tunnels--failed")))
        if tunnel.waiting:  # before the app's state, whose message the ellipsis may cut
            app = Text.assemble(Text(f"  {held_text(tunnel.waiting)}", style=self._style("tunnels--reconnecting")), app)
        message = cell_len(app_state_text(tunnel)) - cell_len(app_state_words(
            tunnel.app_state, restarts=tunnel.app_restarts, exit_code=tunnel.app_exit_code)) if tunnel.app_state else 0
        if level >= 1:
            line.append_text(app)
            line.append_text(counts)
            # The message is no longer last: the counts after it go first, then the message.
            return line, max(0, counts.cell_len + message - 3) if message else 0
        line.append_text(counts)
        line.append_text(app)
        return line, max(0, message - 3)

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
        # One line without http:// and all go without it: the URLs stay in columns.
        bare = any(self._fitted(tunnels[index])[1] for index in shown)
        for index in shown:
            lines.append(self._tunnel_line(tunnels[index], index == self.cursor, bare=bare))
            if index == self.cursor and hint is not None:
                lines.append(hint)
        if len(shown) < len(tunnels):
            lines.append(Text(f"{len(tunnels)} tunnels, {shown.start + 1}-{shown.stop} shown: ↑↓ scroll",
                              style=self._style("tunnels--dim")))
        if not self.tunnels:
            hint = "no tunnel: press n to start one" if self.agent is not None else "stored captures (no agent)"
            lines.append(Text(hint, style=self._style("tunnels--dim")))
        return Text("\n").join(lines)
