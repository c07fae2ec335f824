"""The inspector app: wires the tunnels panel, stats, filter bar and request table to the backend.

Features live in the widgets, screens, ``live`` (table updates) and ``backend`` (store and API);
the app binds keys to them and moves results between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.notifications import SeverityLevel
from textual.binding import Binding, BindingType
from textual.actions import parse as parse_action
from textual.css.query import NoMatches
from textual.dom import DOMNode
from textual.screen import Screen
from textual.widget import Widget
from textual.worker import Worker

from devtunnel.capture.model import Exchange
from devtunnel.capture.outcome import uncounted_headers
from devtunnel.errors import DevtunnelError
from devtunnel.export import export
from devtunnel.tui.backend import Backend, TunnelView
from devtunnel.tui.clipboard import copy
from devtunnel.tui.live import LiveView
from devtunnel.tui.messages import AgentChanged, ExchangesChanged, Resync, TunnelChanged
from devtunnel.tui.screens.detail import DetailScreen
from devtunnel.tui.screens.diff import DiffScreen, DiffSettings
from devtunnel.tui.screens.drill import DrillScreen
from devtunnel.tui.screens.edit import EditReplayScreen, replay_notice
from devtunnel.tui.screens.export import ExportScreen, clipboard_text
from devtunnel.tui.screens.logs import LogsScreen
from devtunnel.tui.screens.help import HelpScreen, describe, key_label
from devtunnel.tui.screens.new_tunnel import NewTunnelScreen, TunnelRequest
from devtunnel.tui.supervisor import AgentSupervisor
from devtunnel.tui.widgets import FilterBar, RequestTable, StatsStrip, TunnelsPanel
from devtunnel.tui.failures import tell_failure
from devtunnel.tui.keys import TypedAhead
from devtunnel.tui.render import escape_control, message_line
from devtunnel.values.terminal import traceback_text
from devtunnel.tui.widgets.footer import Footer

if TYPE_CHECKING:
    from devtunnel.webhooks.context import WebhookContext


_W = TypeVar("_W", bound=Widget)


class InspectorApp(App[None]):
    """See, filter, diff, replay and copy every request through the tunnels.

    Args:
        backend: the store and agent API.
        agent_argv: command line of the agent to supervise, or a function that makes it before
            each start (None: stored captures only).
        agent_env: variables the agent gets on top of this process's environment.
        agent_log: where the agent's output goes.
        history_path: the recent-filters file (None: not kept).
        tunnels: targets to start as soon as the agent is up (``TunnelRequest``s).
        webhooks: the providers' secrets a sample webhook is signed with, as ``devtunnel send``
            signs (``config.webhook_context``; None: the providers' variables only).
    """

    CSS_PATH = "app.tcss"
    TITLE = "devtunnel"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_filter", "Filter"),
        Binding("n", "new_tunnel", "New tunnel", show=False),
        Binding("r", "replay", "Replay"),
        Binding("e", "edit", "Edit+replay", show=False),
        Binding("d", "diff", "Diff", tooltip="Diff marked"),
        Binding("D", "diff_original", "Diff replay", show=False),
        Binding("c", "copy_curl", "Copy curl", show=False),
        Binding("x", "export", "Export", show=False),
        Binding("a", "drill", "Drill", show=False, tooltip="Answer the next N like this at the relay"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    HELP_ONLY_KEYS: ClassVar[list[BindingType]] = [
        Binding("tab", "focus_next", "Move between the tunnels panel, the filter and the table"),
        Binding("ctrl+p", "command_palette", "Command palette (every action, Send a sample webhook…)"),
    ]
    """Keys Textual binds for every screen, listed by the help screen with the inspector's own."""

    def __init__(self, backend: Backend, *, agent_argv: list[str] | Callable[[], list[str]] | None = None,
                 agent_env: Mapping[str, str] | None = None, agent_log: Path | None = None, history_path: Path | None = None,
                 tunnels: Iterable[TunnelRequest] = (), webhooks: WebhookContext | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.history_path = history_path
        self.supervisor = (AgentSupervisor(agent_argv, agent_log or Path("agent.log"),
                                           lambda status: self.post_message(AgentChanged(status)), env=agent_env)
                           if agent_argv else None)
        self._initial_tunnels = list(tunnels)
        self.webhooks = webhooks
        self.export_send_to = "public"
        """Where copied and exported commands send: ``"public"`` or ``"local"`` (the export dialog's last choice)."""
        self.diff_settings = DiffSettings()
        """Diff mode and ignored fields, kept from one diff to the next for the session."""
        self._latest_replay: dict[str, str] = {}
        """Exchange id -> the id of its latest replay by ``r``: what D diffs on the original."""
        self._poll_failing = False
        self._fed = False
        """Change notices come (the agent's ``/api/events``); without, nothing says when an exchange changes."""
        self.typed_ahead = TypedAhead(self, partial(App.on_event, self))
        """Keys typed fast go where the keys before them sent the focus (``/`` then a filter)."""

    def _fatal_error(self) -> None:
        """Say what broke the inspector (a bug) once it has left the screen, as the log's tracebacks are.

        Textual writes a rich traceback with every frame's local variables (the relay token, a
        webhook secret a replay was signed with, in a terminal, a CI log or a bug report) and the
        message as it is, escape sequences and all: a message may quote what came from the
        network. Here the traceback is Python's own (``traceback_text``): no locals, escaped.
        """
        exc = sys.exc_info()[1] or self._exception
        if exc is None:  # Textual calls this while handling an exception: never without one
            super()._fatal_error()
            return
        self.bell()
        self._exit_renderables.append(Text(traceback_text(exc)))
        self._close_messages_no_wait()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded:
            await self.typed_ahead.key(event)  # in order: each after the one before was handled
            return
        await super().on_event(event)

    def compose(self) -> ComposeResult:
        stats = StatsStrip(id="stats")
        yield TunnelsPanel(rate=stats.rate, id="tunnels")  # one count of requests a second for both
        yield stats
        yield FilterBar(self.history_path, id="filter")
        yield RequestTable(id="requests")
        yield Footer(compact=True)

    @property
    def table(self) -> RequestTable:
        """The request table."""
        return self.query_one(RequestTable)

    def on_mount(self) -> None:
        self.live = LiveView(self.backend, self.table, self.query_one(StatsStrip), self.run_worker,
                             later=lambda delay, callback: self.set_timer(delay, callback))
        self.table.read_failed = self.live.cannot_read  # one notice about the store, whoever read it
        self.live.reload()
        self.table.focus()
        if self.supervisor is not None:
            self.query_one(TunnelsPanel).set_agent(self.supervisor.status)
            self.supervisor.start()
        self._fed = self.supervisor is not None or bool(self.backend.api_url)
        if self._fed:
            self._follow_events()
        # The timers belong to the main screen, so they stop with it: at exit the screens go
        # first, and a tick after that would look for widgets no longer there.
        main = self.screen_stack[0]
        main.set_interval(0.1, self.live.flush, name="flush")
        main.set_interval(1.0, self._tick, name="tick")
        # A kill (SIGTERM) or a closed terminal (SIGHUP) must not leave the agent running alone.
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, lambda: self.call_later(self.action_quit))
            loop.add_signal_handler(signal.SIGHUP, self._terminal_gone)

    def _terminal_gone(self) -> None:
        """The terminal closed: nothing is left to draw on or restore, so stop the agent and go."""
        if self.supervisor is not None:
            self.supervisor.kill_now(signal.SIGTERM)  # it exits cleanly on SIGTERM
        os._exit(128 + signal.SIGHUP)

    MAIN_SCREEN_ACTIONS = frozenset({"focus_filter", "replay", "edit", "diff", "diff_original", "copy_curl",
                                     "export", "new_tunnel", "drill"})
    """App actions about the main screen's table: off while another screen is on top."""

    EXCHANGE_ACTIONS = frozenset({"replay", "edit", "diff_original", "copy_curl", "export"})
    """Actions on one exchange: also on in the detail screen, on the exchange it shows."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.MAIN_SCREEN_ACTIONS and self.screen is not self.screen_stack[0]:
            return action in self.EXCHANGE_ACTIONS and isinstance(self.screen, DetailScreen)
        return True

    def _main(self, kind: type[_W]) -> _W | None:
        """The main screen's widget of ``kind``; None once the app is closing: Textual takes its
        screens down before it handles the messages still queued (a tunnel's change from the
        agent's events, a poll's answer, a tick), and only then unmounts the app."""
        try:
            return self.query_one(kind)
        except NoMatches:
            return None

    def _tick(self) -> None:
        stats, panel = self._main(StatsStrip), self._main(TunnelsPanel)
        if stats is None or panel is None:
            return
        stats.tick()
        panel.refresh()
        self.live.watch_store()
        if int(time.monotonic()) % 2 == 0:
            self.live.refresh_mix()
            self.live.recheck_in_flight()  # ended by no notice: an agent killed mid-request
            if self.backend.api_url:
                self._poll_tunnels()

    # -- the agent ---------------------------------------------------------------------

    @on(AgentChanged)
    def _agent_changed(self, event: AgentChanged) -> None:
        status = event.status
        restarted = status.state == "running" and status.restarts > 0
        first_start = status.state == "running" and not status.restarts
        self.backend.api_url = status.api_url
        panel = self._main(TunnelsPanel)
        if panel is None:
            return
        panel.set_agent(status)
        if status.state != "running":
            panel.update_tunnels([], replace=True)  # they went with the agent
        if first_start:
            self._start_initial_tunnels()
        elif restarted:
            self._restore_tunnels()

    @work(group="tunnels", exit_on_error=False)
    async def _start_initial_tunnels(self) -> None:
        for request in self._initial_tunnels:
            await self._start_tunnel(request)

    @work(group="tunnels", exit_on_error=False)
    async def _restore_tunnels(self) -> None:
        started, problems = await self.backend.restore_tunnels()
        if (panel := self._main(TunnelsPanel)) is not None:
            panel.update_tunnels(started)
        for problem in problems:
            self.notify(problem, title="Tunnel not restored", severity="error")
        self.live.reload()

    @work(group="events", exit_on_error=False)
    async def _follow_events(self) -> None:
        said = ""
        while True:
            try:
                async for message in self.backend.events():
                    kind = message.get("type")
                    if kind == "exchanges":
                        self.post_message(ExchangesChanged([str(i) for i in message.get("ids", [])]))
                    elif kind == "tunnel":
                        self.post_message(TunnelChanged(TunnelView.from_json(message.get("tunnel"))))
                    elif kind == "resync":
                        self.post_message(Resync())
                return  # the backend was closed
            except DevtunnelError as exc:
                # The agent sent an event we cannot read: say it (once per kind), and follow again;
                # what was missed meanwhile is read again with the whole list.
                if str(exc) != said:
                    said = str(exc)
                    self.notify(said, title="Agent events", severity="error", timeout=10)
                self.post_message(Resync())
                await asyncio.sleep(1.0)

    @on(ExchangesChanged)
    def _exchanges_changed(self, event: ExchangesChanged) -> None:
        self.live.changed(event.ids)  # merged with others until the next flush

    @on(TunnelChanged)
    def _tunnel_changed(self, event: TunnelChanged) -> None:
        if (panel := self._main(TunnelsPanel)) is not None:
            panel.update_tunnels([event.tunnel])

    @on(Resync)
    def _resync(self) -> None:
        self.live.resync()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        tell_failure(self, event)

    @work(group="poll", exclusive=True, exit_on_error=False)
    async def _poll_tunnels(self) -> None:
        try:
            tunnels = await self.backend.tunnels()
        except DevtunnelError as exc:
            # Polled every two seconds: said once until a poll succeeds again; the panel stays.
            if not self._poll_failing:
                self._poll_failing = True
                self.notify(str(exc), title="Could not list tunnels", severity="error", timeout=10)
            return
        self._poll_failing = False
        if (panel := self._main(TunnelsPanel)) is not None:
            panel.update_tunnels(tunnels, replace=True)

    async def _start_tunnel(self, request: TunnelRequest) -> None:
        try:
            tunnel = await self.backend.start_tunnel(request.target, request.name, request.relay)
        except DevtunnelError as exc:
            self.notify(str(exc), title="Tunnel not started", severity="error")
            return
        if (panel := self._main(TunnelsPanel)) is not None:
            panel.update_tunnels([tunnel])

    # -- messages from the widgets -----------------------------------------------------

    @on(FilterBar.Applied)
    def _filter_applied(self, event: FilterBar.Applied) -> None:
        self.live.set_filter(event.expression, event.filter)

    @on(FilterBar.Done)
    def _filter_done(self) -> None:
        self.table.focus()

    @on(RequestTable.FollowChanged)
    def _follow_changed(self, event: RequestTable.FollowChanged) -> None:
        if (stats := self._main(StatsStrip)) is not None:
            stats.marker = "following" if event.following else "paused"

    @on(RequestTable.Selected)
    def _selected(self) -> None:
        self._open_detail()

    @on(TunnelsPanel.Action)
    def _tunnel_action(self, event: TunnelsPanel.Action) -> None:
        if event.action == "copy":
            self._copy(event.tunnel.public_url, "public URL")
        elif event.action == "logs":
            self._open_logs(event.tunnel)
        else:
            self._tunnel_command(event.action, event.tunnel)

    def _open_logs(self, tunnel: TunnelView) -> None:
        if not tunnel.app_state:
            self.notify(f"{tunnel.name} runs no app: start it with --run CMD, or run = \"...\" in devtunnel.toml",
                        title="No logs", severity="warning")
            return
        self.push_screen(LogsScreen(tunnel.name, lambda search: self.backend.follow_app_logs(tunnel.name, contains=search)))

    @work(group="tunnels", exit_on_error=False)
    async def _tunnel_command(self, action: str, tunnel: TunnelView) -> None:
        try:
            if tunnel.state == "stopped":  # s or R: started again as it ran (its app, hold, rules)
                action = "start"
                view = await self.backend.start_again(tunnel.name)
            elif action == "start":
                return  # started meanwhile (the key bar said Start a moment ago)
            elif action == "stop":
                view = await self.backend.stop_tunnel(tunnel)
            else:
                view = await self.backend.restart_tunnel(tunnel)
            if (panel := self._main(TunnelsPanel)) is not None:
                panel.update_tunnels([view])
        except DevtunnelError as exc:
            self.notify(str(exc), title=f"Could not {action} {tunnel.name}", severity="error")

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Show a notification as plain text, escaped, whatever ``markup`` says (every ``notify`` of a
        screen or widget comes here).

        Messages quote errors, and errors quote captured bytes and what a relay said (a header name,
        a refusal reason): as Textual markup, ``[/]`` there raised when the toast was drawn and
        ``[@click=app.quit]`` or ``[link=...]`` made the text act.
        """
        super().notify(message_line(message), title=escape_control(title),
                       severity=severity, timeout=timeout, markup=False)

    # -- actions -----------------------------------------------------------------------

    async def _current(self) -> Exchange | None:
        """The exchange an action is about: the one the detail screen shows, or the table's current one."""
        if isinstance(self.screen, DetailScreen):
            return self.screen.exchange
        exchange_id = self.table.current_id
        if exchange_id is None:
            self.notify("No request selected", severity="warning")
            return None
        return await self.backend.get(exchange_id)

    def _copy(self, text: str, what: str, note: str = "") -> None:
        copied = copy(self, text)  # type: ignore[arg-type]
        title = f"Copied {what}" if copied.system else f"Sent {what} to the terminal"
        message = f"{copied.sentence}. {note}" if note else copied.sentence
        self.notify(message, title=title, severity="warning" if copied.tmux_blocks else "information",
                    timeout=10 if copied.tmux_blocks else 5)

    @work(group="action", exit_on_error=False)
    async def _open_detail(self) -> None:
        heard = self.live.heard
        exchange = await self._current()
        if exchange is not None:
            # An exchange in flight is read again when a notice names it; with no agent to send
            # notices, on a slow timer.
            await self.push_screen(DetailScreen(exchange, self.backend.get, self.live if self._fed else None,
                                                heard=heard))

    def action_focus_filter(self) -> None:
        self.query_one(FilterBar).focus_input()

    def action_help(self) -> None:
        from devtunnel.capture.filters import FILTER_HELP
        from devtunnel.tui.render import TABLE_LEGEND
        from devtunnel.capture.marks import REPLAY_MARKS, RULE_MARKS

        marks = [*REPLAY_MARKS, *RULE_MARKS, ("*", "marked (m)"), ("…", "still in flight"),
                 ("HLD", "held: not sent yet, waiting for the app devtunnel runs to come back (--hold)"),
                 ("ERR", "ended without a response"),
                 ("200", "in the look of ERR: the response began, then the exchange broke (the detail says why)")]
        self.push_screen(HelpScreen([
            ("Inspector", [*self.BINDINGS, *self.HELP_ONLY_KEYS]), ("Request table", RequestTable.BINDINGS),
            ("Filter bar", FilterBar.BINDINGS), ("Tunnels panel (tab to focus)", TunnelsPanel.BINDINGS),
            ("Request detail", [*DetailScreen.BINDINGS, *DetailScreen.HELP_ONLY_KEYS]), ("Diff", DiffScreen.BINDINGS),
            ("Edit and replay (e)", EditReplayScreen.BINDINGS), ("Export (x)", ExportScreen.BINDINGS),
            ("Logs view (l in the tunnels panel)", LogsScreen.BINDINGS),
        ], FILTER_HELP, [*marks, *TABLE_LEGEND]))

    def action_send_sample(self) -> None:
        """Open the "send a sample webhook" screen, aimed at the selected tunnel's public URL and
        starting on the first sample of the provider configured for it (``[tunnels.NAME.webhooks.PROVIDER]``)."""
        # Imported here: the webhook samples it lists cost startup time. Not a worker: a failed
        # import ends the app with its traceback, as at startup.
        from devtunnel.tui.screens.send import SendSampleScreen

        tunnel = self.query_one(TunnelsPanel).current
        # The tunnel's own secrets where it has some: its receiver holds them, and its agent judges with them.
        webhooks = self.webhooks.for_tunnel(tunnel.name) if tunnel is not None and self.webhooks else self.webhooks
        self.push_screen(SendSampleScreen(tunnel.public_url if tunnel is not None else "", webhooks=webhooks,
                                          providers=webhooks.configured if webhooks else ()))

    def action_new_tunnel(self) -> None:
        if not self.backend.api_url:
            self.notify("No agent is running (devtunnel inspect shows stored captures only)", severity="warning")
            return

        def started(request: TunnelRequest | None) -> None:
            if request is not None:
                self.run_worker(partial(self._start_tunnel, request), group="tunnels", exit_on_error=False)

        self.push_screen(NewTunnelScreen(), started)

    @work(group="action", exit_on_error=False)
    async def action_replay(self) -> None:
        exchange = await self._current()
        if exchange is None:
            return
        try:
            new = await self.backend.replay(exchange)
        except DevtunnelError as exc:
            self.notify(str(exc), title="Replay failed", severity="error")
            return
        self.live.changed([new.id])
        self._latest_replay[exchange.id] = new.id
        # What came back, as plain text: the reason and the error line come from the network.
        notice = replay_notice(exchange, new, lead=f"{new.id}: ", diff_hint="D diff with the original",
                               ignore_headers=self.backend.replay_ignore_headers)
        self.notify(notice.plain, title="Replayed", markup=False,
                    severity="error" if new.response is None else "warning" if new.signature_notice else "information")

    @work(group="action", exit_on_error=False)
    async def action_drill(self) -> None:
        """Answer the next N requests like the current one with a status, at the relay."""
        exchange = await self._current()
        if exchange is None:
            return
        if not self.backend.api_url:
            self.notify("No agent is running (devtunnel inspect shows stored captures only)", severity="warning")
            return
        drill = await self.push_screen_wait(DrillScreen(exchange))
        if drill is None:
            return
        try:
            rule = await self.backend.add_rule(drill.tunnel, drill.rule())
        except DevtunnelError as exc:
            self.notify(str(exc), title="Drill not added", severity="error", markup=False)
            return
        self.notify(f"{rule.get('description', 'rule added')}: the next {drill.count} get {drill.status}",
                    title="Drill at the relay", markup=False)

    @work(group="action", exit_on_error=False)
    async def action_edit(self) -> None:
        exchange = await self._current()
        if exchange is None:
            return

        async def send(edit: Any) -> Exchange:
            new = await self.backend.replay(exchange, edit)
            self.live.changed([new.id])
            return new

        await self.push_screen(EditReplayScreen(exchange, send, ignore_headers=self.backend.replay_ignore_headers))

    @work(group="action", exit_on_error=False)
    async def action_diff(self) -> None:
        marked = sorted(self.table.marked)
        current = self.table.current_id
        pair = marked[-2:] if len(marked) >= 2 else [*marked, current] if marked and current else []
        if len(pair) != 2 or pair[0] == pair[1]:
            self.notify("Mark a request with m, then move to another and press d", severity="warning")
            return
        await self._diff(*sorted(pair))  # ids sort by time: A is the older

    @work(group="action", exit_on_error=False)
    async def action_diff_original(self) -> None:
        exchange = await self._current()
        if exchange is None:
            return
        if exchange.replay_of is not None:
            await self._diff(exchange.replay_of, exchange.id)
        elif exchange.id in self._latest_replay:  # the original, just replayed with r
            await self._diff(exchange.id, self._latest_replay[exchange.id])
        else:
            self.notify("This request is not a replay (r replays it)", severity="warning")

    async def _diff(self, a: str, b: str) -> None:
        try:
            await self.push_screen(DiffScreen(await self.backend.get(a), await self.backend.get(b),
                                              settings=self.diff_settings,
                                              volatile=uncounted_headers(self.backend.replay_ignore_headers)))
        except DevtunnelError as exc:
            self.notify(str(exc), title="Cannot diff", severity="error")

    @work(group="action", exit_on_error=False)
    async def action_copy_curl(self) -> None:
        exchange = await self._current()
        if exchange is None:
            return
        local = self.export_send_to == "local"
        try:
            # The rule of the export dialog's clipboard choice: a command reading side files
            # (binary or large bodies) is refused, not copied pointing at files never written.
            text = clipboard_text(export("curl", [exchange], **({"local": True} if local else {})), "curl")  # type: ignore[arg-type]
        except DevtunnelError as exc:
            self.notify(f"Nothing copied: {exc}", title="Cannot copy as curl", severity="error")
            return
        where = "the local service" if local else "the public URL"
        note = f"It sends to {where}: x chooses public URL or local service."
        if not local and self.backend.api_url and not self.query_one(TunnelsPanel).running(exchange.tunnel):
            # A row of a tunnel stopped since: the relay answers its public URL with 404 now.
            note = (f"It sends to the public URL, but {exchange.tunnel} is stopped: the relay answers 404 "
                    "until it runs again (x chooses the local service).")
        self._copy(text, "curl command", note=note)

    def on_export_screen_send_to_changed(self, event: Any) -> None:
        self.export_send_to = event.send_to

    @work(group="action", exit_on_error=False)
    async def action_export(self) -> None:
        try:
            exchange = await self._current()
            if exchange is None:
                return
            # From the detail screen, the exchange on it; from the table, the marked set if any
            # (wherever the cursor is), else the cursor's row. The dialog starts on the marked
            # set and offers the cursor's row instead.
            ids = [exchange.id] if isinstance(self.screen, DetailScreen) else sorted(self.table.marked) or [exchange.id]
            exchanges = [exchange if i == exchange.id else await self.backend.get(i) for i in ids]
        except DevtunnelError as exc:
            self.notify(str(exc), title="Cannot export", severity="error")
            return
        await self.push_screen(ExportScreen(exchanges, current=exchange, send_to=self.export_send_to))

    async def on_unmount(self) -> None:
        """However the inspector ends (``q``, a crash, an embedding program closing it), what it
        started ends with it: the store readers (each a thread with a connection to the
        database), the API client and the supervised agent. After ``q`` this finds them done."""
        await self.shutdown()

    async def action_quit(self) -> None:
        """Stop the agent, then leave (the terminal is restored by Textual)."""
        await self.shutdown()
        self.exit()

    async def shutdown(self) -> None:
        """Stop reading, then stop the supervised agent."""
        self.workers.cancel_all()
        await self.backend.aclose()
        if self.supervisor is not None:
            await self.supervisor.stop()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if screen is self.screen_stack[0]:
            yield SystemCommand("Send a sample webhook…", "a signed sample delivery (like devtunnel send) to a tunnel",
                                self.action_send_sample)
        offered: set[tuple[DOMNode, str]] = set()
        for owner, bindings in ((self, self.BINDINGS), (self.table, RequestTable.BINDINGS),
                                (self.query_one(TunnelsPanel), TunnelsPanel.BINDINGS)):
            for binding in bindings:
                if not isinstance(binding, Binding) or binding.action in ("quit", "cursor_up", "cursor_down",
                                                                          "page_up", "page_down", "move(-1)",
                                                                          "move(1)"):
                    continue
                # A tunnel key that would do nothing now (Start on a running tunnel) is not offered,
                # and an action of two keys (s and R start a stopped tunnel) once, under its first key.
                # (The app's own keys are judged for the screen on top: here, the palette.)
                _, name, parameters = parse_action(binding.action)
                if (owner, binding.action) in offered or (
                        owner is not self and owner.check_action(name, parameters) is False):
                    continue
                offered.add((owner, binding.action))
                yield SystemCommand(describe(binding), f"key: {key_label(binding.key)}",
                                    lambda o=owner, a=binding.action: o.run_action(a))
