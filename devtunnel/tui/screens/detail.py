"""The detail of one exchange: request and response headers and bodies, timing, WebSocket messages.

An exchange shown while still in flight is read again when a change notice names it (the
agent's ``/api/events``, through ``LiveView.listen``), never on a timer: a WebSocket or an
event stream left open in the detail for an hour costs no reads while nothing happens to it.
Only without notices (``devtunnel inspect``, no agent: another process may be recording it)
is it read every ``DetailScreen.UNFED_POLL`` seconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, ClassVar, Protocol

from rich.table import Table
from rich.text import Text
from textual import events
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from devtunnel.errors import DevtunnelError, NotFoundError
from devtunnel.capture.model import Exchange, Headers, Request, Response, WsMessage, held_text
from devtunnel.values.exchange_ids import stable_short_id
from devtunnel.tui.render import (
    describe_body,
    format_timestamp,
    safe_text,
    status_style,
    webhook_section,
)
from devtunnel.tui.screens.lines import LinesView
from devtunnel.tui.widgets.footer import Footer
from devtunnel.values.terminal import escape
from devtunnel.webhooks import BUILTIN, by_name
from devtunnel.values.durations import human_duration
from devtunnel.values.sizes import format_size

__all__ = [
    "ChangeNotices",
    "DetailScreen",
    "HeadersView",
    "MessagePane",
    "TitleLine",
    "WebhookView",
    "WsMessageLines",
    "exchange_title",
    "ws_preview",
]

_OPCODES = {0: "cont", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
_PREVIEW = 120


_SHORTEST_URL = 16
"""Characters of the URL a narrow title keeps (with an ellipsis for the rest)."""


def exchange_title(exchange: Exchange, width: int | None = None) -> Text:
    """One line naming an exchange: method, URL, status and duration (captured parts escaped).

    With ``width`` (cells), the least important parts give way first so that the status and the
    duration stay in sight: the reason phrase goes, then the middle of the URL.
    """
    url = escape(exchange.url)
    title = _title(exchange, url, reason=True)
    if width is None or title.cell_len <= width:
        return title
    title = _title(exchange, url, reason=False)
    keep = max(_SHORTEST_URL, len(url) - (title.cell_len - width) - 1)  # the ellipsis takes one
    if title.cell_len > width and keep < len(url):
        head = keep - keep // 3  # more of the start: host and path
        title = _title(exchange, url[:head] + "…" + url[len(url) - (keep - head):], reason=False)
    return title


def _title(exchange: Exchange, url: str, *, reason: bool) -> Text:
    title = Text(no_wrap=True, overflow="ellipsis", end="")
    title.append(escape(exchange.request.method), "bold")
    title.append(" ")
    title.append(url)
    title.append("  ")
    if exchange.response is not None:
        reason_text = exchange.response.reason_text
        title.append(f"{exchange.response.status}", status_style(exchange.response.status))
        if reason and reason_text:
            title.append(" " + escape(reason_text))
    elif exchange.error:
        title.append(exchange.error, "bold red")
    else:
        title.append("pending", "dim")
    if exchange.duration is not None:
        title.append(f"  {human_duration(exchange.duration)}", "dim")
    if exchange.replay_of:
        title.append("  edited replay" if exchange.edited else "  replay", "italic magenta")
        if exchange.resigned:
            title.append(f"  re-signed ({escape(exchange.resigned)})", "italic magenta")
    if exchange.rule is not None:
        title.append(f"  {exchange.rule.label()}", "italic yellow")
    return title


class TitleLine(Static):
    """A one-line title made again for the width it has (``make(width)``), so that a narrow
    screen keeps its important parts (see ``exchange_title``)."""

    def __init__(self, make: Callable[[int], Text], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._make = make

    def render(self) -> Text:
        return self._make(self.content_size.width)


class HeadersView(VerticalScroll):
    """Header fields in order, exactly as received (escaped); a long value wraps under itself.

    A Stripe-Signature of 200 characters is shown whole, folded over a few rows. When there are
    more fields than fit, the view scrolls (tab to it, then the arrows or the mouse wheel).
    """

    DEFAULT_CSS = """
    HeadersView {
        height: auto;
        max-height: 65%;
        padding: 0 1;
        scrollbar-size-vertical: 1;
        &:focus { background-tint: $foreground 4%; }
        & > Static { width: 1fr; }
    }
    """

    NAME_WIDTH = 28
    """Names longer than this fold, so a value always keeps most of the width."""

    def __init__(self, headers: Headers, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="headers")
        self.fields: list[tuple[str, str]] = [(escape(name), escape(value)) for name, value in headers.display_items()]
        """The ``(name, value)`` pairs as shown: escaped, in the order received."""

    def compose(self) -> ComposeResult:
        if not self.fields:
            yield Static(Text("(no headers)", "dim"))
            return
        grid = Table.grid(padding=(0, 2))
        grid.add_column(max_width=self.NAME_WIDTH)
        grid.add_column(ratio=1)
        for name, value in self.fields:
            grid.add_row(Text(name, "bold", overflow="fold"), Text(value, overflow="fold"))
        yield Static(grid)


class WebhookView(VerticalScroll):
    """The webhook verdict (``webhook_section``). It is shown whole unless the screen is too short
    for it and the body: then it scrolls, and tab stops on it."""

    DEFAULT_CSS = """
    WebhookView {
        height: auto;
        padding: 0 1;
        scrollbar-size-vertical: 1;
        &:focus { background-tint: $foreground 4%; }
        & > Static { width: 1fr; }
    }
    """

    def __init__(self, verdict: Text, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._verdict = verdict

    def compose(self) -> ComposeResult:
        yield Static(self._verdict, id=f"{self.id}-text" if self.id else None)

    def allow_focus(self) -> bool:
        return self.max_scroll_y > 0


class MessagePane(TabPane):
    """The tab of a request or a response: start line, webhook verdict, headers, then the body.

    The headers and the verdict are as tall as they need, but never so tall that the body is
    squeezed out: whatever the height of the screen, the body keeps ``BODY_ROWS`` rows (or a
    fifth of the pane, when more), or as many as it has when it is shorter. Headers that do not
    fit then scroll (tab to them), and so does a verdict on a very short screen.
    """

    BODY_ROWS = 4
    """Rows of the body always in sight (at 80x24, what is left under a webhook's verdict and
    ten headers: the first lines of a JSON delivery)."""

    HEADERS_ROWS = 3
    """Rows the headers keep before the verdict gives up any."""

    HEADERS_SHARE = 0.65
    """The most of the pane the headers take, however many they are."""

    def on_resize(self, event: events.Resize) -> None:
        self.fit()

    def fit(self, *, again: bool = True) -> None:
        """Share the pane's height out between the verdict, the headers and the body (``again``:
        once more after the next refresh if its parts are not laid out yet)."""
        height = self.content_size.height
        headers = self.query_children(HeadersView)
        if height <= 0 or not headers:
            return
        view = headers.first()
        webhook = self.query_children(WebhookView)
        hook = webhook.first() if webhook else None
        body = self.query_children(".body-box").first()
        if again and any(child.outer_size.height == 0 for child in self.children if child is not body):
            self.call_after_refresh(self.fit, again=False)  # not laid out yet: measured once it is
            return
        # Fixed: the start line (folded over up to 4 rows), the section lines, the body's label.
        fixed = sum(child.outer_size.height for child in self.children if child not in (view, hook, body)) + 1
        body_rows = min(_body_rows(body), max(self.BODY_ROWS, height // 5))
        room = max(0, height - fixed - body_rows)
        hook_rows = hook.virtual_size.height if hook is not None else 0
        most = max(self.HEADERS_ROWS, min(int(height * self.HEADERS_SHARE), room - hook_rows))
        view.styles.max_height = most
        if hook is not None:
            needed = min(view.virtual_size.height, most)
            hook.styles.max_height = max(1, room - needed)


def _body_rows(box: Widget) -> int:
    """The rows a body box's content (under its label) would take, shown whole."""
    rows = 0
    for child in box.children:
        if isinstance(child, LinesView):
            rows += len(child.lines)
        elif isinstance(child, DataTable):
            rows += child.row_count + 1  # its column titles
        elif child.id is None or not child.id.endswith("-body-label"):
            rows += 1  # a field's label
    return rows


def ws_preview(message: WsMessage) -> Text:
    """A short, escaped preview of a WebSocket payload (hex for binary frames)."""
    payload = message.payload
    if message.opcode == 1:
        shown = payload[: _PREVIEW * 4].decode("utf-8", errors="replace")[:_PREVIEW]
        text = Text(escape(shown), no_wrap=True, end="")
    else:
        text = Text(payload[:24].hex(" "), style="cyan", no_wrap=True, end="")
    if message.size > len(payload):
        why = message.cut_why
        text.append(f"  (recorded {len(payload)} of {message.size} bytes{': ' + why if why else ''})", "dim")
    return text


class WsMessageLines:
    """A WebSocket session's messages, one row each, made only for the rows on screen.

    A session left open for an hour holds tens of thousands of messages: a DataTable measures
    every cell of every row before it shows one (seconds for 12,000 messages), this costs the
    rows in sight. ``cells(index)`` are a row's columns: direction, time, type, size, preview.
    """

    _SIZE = 10  # "1023.9 KiB"

    def __init__(self, exchange: Exchange) -> None:
        self._messages = exchange.ws_messages
        self._start = exchange.started_at
        ends = (self._messages[0], self._messages[-1]) if self._messages else ()
        # Times only grow along the session: the widest is the first's or the last's.
        self._time = max((len(self._when(m)) for m in ends), default=4)
        self.width = 9 + 2 + self._time + 2 + 6 + 2 + self._SIZE + 2 + _PREVIEW * 2 + 40

    def _when(self, message: WsMessage) -> str:
        return f"+{human_duration(message.time - self._start)}"

    def __len__(self) -> int:
        return len(self._messages)

    def header(self) -> Text:
        """The column titles, laid out as the rows are."""
        return Text(f"{'Dir':<9}  {'Time':>{self._time}}  {'Type':<6}  {'Size':>{self._SIZE}}  Preview", "bold")

    def cells(self, index: int) -> tuple[Text, Text, Text, Text, Text]:
        """Row ``index``'s columns."""
        message = self._messages[index]
        return (
            Text("client →", "green") if message.sender == "client" else Text("← service", "cyan"),
            Text(self._when(message)),
            Text(_OPCODES.get(message.opcode, str(message.opcode))),
            Text(format_size(message.size)),
            ws_preview(message),
        )

    def line(self, index: int) -> Text:
        """Row ``index``: its cells in their columns."""
        arrow, when, kind, size, preview = self.cells(index)
        arrow.pad_right(9 - arrow.cell_len)
        when.pad_left(self._time - when.cell_len)
        kind.pad_right(6 - kind.cell_len)
        size.pad_left(self._SIZE - size.cell_len)
        return Text("  ", end="").join((arrow, when, kind, size, preview))


class ChangeNotices(Protocol):
    """Where the detail hears that exchanges changed in the store (``devtunnel.tui.live.LiveView``)."""

    heard: int
    """How many notices came so far, whatever they named."""

    def listen(self, listener: Callable[[Collection[str] | None], None]) -> Callable[[], None]:
        """Call ``listener`` with the ids of each notice (None: anything may have changed);
        returns the function that stops it."""
        ...


class DetailScreen(Screen[None]):
    """Everything captured about one exchange, in tabs.

    | Key | Action |
    | :- | :- |
    | escape, q | Close. |
    | 1 / 2 / 3 / 4 | Request, Response, Timing, Messages (WebSockets). |
    | r | Replay this exchange. |
    | D | Diff it with its latest replay by r (or, for a replay, with its original). |
    | e | Edit, then replay it. |
    | c | Copy it as a curl command. |
    | x | Export it (curl, HAR, raw, httpie). |
    | p | Toggle pretty-printing (JSON, XML, forms) and the body as received (folded at the width). |
    | h | Toggle the hex dump of the bodies. |
    | down, j / up, k | Scroll the body of the tab shown (or what has the focus) by a row. |
    | pagedown / pageup | By a page. |
    | home / end | To its top, to its end. |
    | tab | Move to the headers (to scroll them when they do not all fit) and the bodies. |

    The keys r, D, e, c and x run the app's actions, on the exchange this screen shows.

    Args:
        exchange: what to show.
        reload: reads the exchange again by id: one shown in flight is redrawn once it has ended.
        notices: the change notices that say when to read it again (None: it is read every
            ``UNFED_POLL`` seconds until it ends).
        heard: ``notices.heard`` from before ``exchange`` was read: if notices came since, it is
            read once more at once (one of them may have been about its end).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close"),
        Binding("r", "app.replay", "Replay"),
        Binding("D", "app.diff_original", "Diff replay", show=False),
        Binding("e", "app.edit", "Edit", tooltip="Edit+replay"),
        Binding("c", "app.copy_curl", "Curl", tooltip="Copy curl"),
        Binding("x", "app.export", "Export"),
        Binding("1", "tab('request')", "Request", show=False),
        Binding("2", "tab('response')", "Response", show=False),
        Binding("3", "tab('timing')", "Timing", show=False),
        Binding("4", "tab('messages')", "Messages", show=False),
        Binding("p", "pretty(False)", "Raw", tooltip="Bodies as received"),
        Binding("p", "pretty(True)", "Pretty", tooltip="Bodies pretty-printed"),
        Binding("h", "toggle_hex", "Hex", tooltip="Bodies as a hex dump (again: as before)"),
        Binding("down,j", "scroll('down')", "Scroll the body (or what has the focus) down a row", show=False),
        Binding("up,k", "scroll('up')", "Scroll it up a row", show=False),
        Binding("pagedown", "scroll('page_down')", "Scroll it down a page", show=False),
        Binding("pageup", "scroll('page_up')", "Scroll it up a page", show=False),
        Binding("home", "scroll('home')", "Go to its top", show=False),
        Binding("end", "scroll('end')", "Go to its end", show=False),
    ]

    HELP_ONLY_KEYS: ClassVar[list[BindingType]] = [
        Binding("tab", "focus_next", "To the headers, then the body (Textual's focus key)"),
    ]
    """Keys the screen gets from Textual, listed by the help screen with its own."""

    DEFAULT_CSS = """
    DetailScreen {
        #detail-title { height: 1; padding: 0 1; background: $panel; }
        TabbedContent { height: 1fr; }
        TabPane { padding: 0; height: 1fr; }
        .start-line { height: auto; max-height: 4; padding: 0 1; color: $text-muted; }
        .section { height: 1; padding: 0 1; background: $boost; color: $text-accent; }
        DataTable.form { height: 1fr; }
        DataTable.form.with-json { height: auto; max-height: 50%; }
        .body-box { height: 1fr; }
        LinesView { padding: 0 1; }
        .none { padding: 1 2; color: $text-muted; }
        #timing-text { padding: 1 2; }
        #ws-header { height: 1; padding: 0 1; background: $boost; }
        #ws-messages { height: 1fr; }
    }
    """

    UNFED_POLL = 2.0
    """Seconds between reads of an exchange still in flight when no change notices come."""

    RETRY = 1.0
    """Seconds before a read that failed (the store locked, say) is tried again."""

    def __init__(self, exchange: Exchange, reload: Callable[[str], Awaitable[Exchange]] | None = None,
                 notices: ChangeNotices | None = None, *, heard: int | None = None) -> None:
        super().__init__()
        self.exchange = exchange
        self._reload = reload
        self._notices = notices
        self._heard = heard
        self._stop_listening: Callable[[], None] | None = None
        self._reading = False
        self._again = False
        """Notices about it came during the read in progress: read once more after it."""
        self._poll: Timer | None = None
        self._pretty = True
        self._hex = False

    def on_mount(self) -> None:
        if self._reload is None or self.exchange.complete:
            return
        if self._notices is None:
            self._poll = self.set_interval(self.UNFED_POLL, self._read_once)
            return
        self._stop_listening = self._notices.listen(self._changed)
        if self._heard is not None and self._notices.heard != self._heard:
            self._changed(None)

    def on_unmount(self) -> None:
        self._stop_following()

    def _stop_following(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self._poll is not None:
            self._poll.stop()
            self._poll = None

    def _changed(self, ids: Collection[str] | None) -> None:
        """A change notice: read the exchange again if it names it (None names every exchange).

        One read at a time: notices that come during it make one more read after it, however many.
        """
        if self._stop_listening is None or (ids is not None and self.exchange.id not in ids):
            return
        if self._reading:
            self._again = True
            return
        self._reading = True
        self.run_worker(self._read_while_changed, group="read-again", exit_on_error=False)

    async def _read_while_changed(self) -> None:
        try:
            self._again = True
            while self._again and self._stop_listening is not None:
                self._again = False
                exchange = await self._read_once()
                if exchange is None:
                    return
        finally:
            self._reading = False

    async def _read_once(self) -> Exchange | None:
        """Read the exchange; once it has ended, redraw it and stop following it. Returns None
        when there is nothing more to read for now (it ended, or the read failed)."""
        assert self._reload is not None
        try:
            exchange = await self._reload(self.exchange.id)
        except NotFoundError:
            return None  # gone from the store: read again only if a notice names it
        except DevtunnelError:
            if self._poll is None:  # the poll reads again at its next tick
                self.set_timer(self.RETRY, lambda: self._changed(None))
            return None
        if exchange.complete:
            self._stop_following()  # this cancels the poll's task: redraw outside it
            self.call_later(self._show_ended, exchange)
            return None
        return exchange

    async def _show_ended(self, exchange: Exchange) -> None:
        """Redraw what an exchange's end changes: the title, the response, the timing and a
        WebSocket's messages."""
        self.exchange = exchange
        self.query_one("#detail-title", TitleLine).refresh()
        pane = self.query_one("#response", MessagePane)
        await pane.remove_children()
        await pane.mount_compose(self._response())
        pane.fit()
        self.query_one("#timing-text", Static).update(self._timing())
        if exchange.websocket:
            pane = self.query_one("#messages", TabPane)
            await pane.remove_children()
            await pane.mount_compose(self._ws_messages())
            self.query_one(TabbedContent).get_tab("messages").label = f"Messages ({len(exchange.ws_messages)})"

    def compose(self) -> ComposeResult:
        ex = self.exchange
        # The id as the log line prints it: ``devtunnel show`` / ``replay`` take it.
        yield TitleLine(self._title, id="detail-title")
        with TabbedContent(initial="request"):
            with MessagePane("Request", id="request"):
                yield from self._message("request", ex.request)
            with MessagePane("Response", id="response"):
                yield from self._response()
            with TabPane("Timing", id="timing"):
                yield Static(self._timing(), id="timing-text")
            if ex.websocket:
                with TabPane(f"Messages ({len(ex.ws_messages)})", id="messages"):
                    yield from self._ws_messages()
        yield Footer(compact=True)

    # ------------------------------------------------------------------ parts

    def _title(self, width: int) -> Text:
        ex = self.exchange
        short_id = stable_short_id(ex.id) + "  "
        return Text.assemble((short_id, "dim"), exchange_title(ex, width - len(short_id)), no_wrap=True,
                             overflow="ellipsis", end="")

    def _response(self) -> ComposeResult:
        if self.exchange.response is not None:
            yield from self._message("response", self.exchange.response)
        else:
            yield Static(self._no_response(), classes="none")

    def _message(self, side: str, message: Request | Response) -> ComposeResult:
        if isinstance(message, Request):
            start = f"{message.method} {message.display_url} HTTP/{message.http_version}"
        else:
            start = f"HTTP/{message.http_version} {message.status} {message.reason_text}".rstrip()
        # A long target is one word (no spaces to wrap at): folded, not pushed off the row.
        line = safe_text(start)
        line.overflow = "fold"
        yield Static(line, classes="start-line")
        if isinstance(message, Request) and self.exchange.webhook is not None:
            yield Static("Webhook", classes="section", markup=False)
            yield WebhookView(self._webhook(), id="webhook")
        yield Static(f"Headers ({len(message.headers)})", classes="section", markup=False)
        yield HeadersView(message.headers, id=f"{side}-headers")
        with Vertical(id=f"{side}-body-box", classes="body-box"):
            yield from self._body(side, message)

    def _body(self, side: str, message: Request | Response) -> ComposeResult:
        body = describe_body(message, pretty=self._pretty, hex_dump=self._hex)
        yield Static(f"Body · {body.label}", classes="section", id=f"{side}-body-label", markup=False)
        if body.kind == "form" and body.lines is None:
            table: DataTable[Text] = DataTable(id=f"{side}-form", cursor_type="row", zebra_stripes=True,
                                               classes="form with-json" if body.field_json else "form")
            table.add_column("Field", key="field")
            table.add_column("Value", key="value")
            for name, value in body.fields:
                table.add_row(safe_text(name, "bold"), safe_text(value))
            yield table
            for i, (name, lines) in enumerate(body.field_json):
                yield Static(safe_text(f"Field {name} · json"), classes="section", id=f"{side}-field-{i}-label")
                yield LinesView(lines, id=f"{side}-field-{i}")
        elif body.lines is not None:
            # As received, a body is folded at the width: a minified JSON reads top to bottom.
            yield LinesView(body.lines, fold=body.fold, id=f"{side}-body")

    def _webhook(self) -> Text:
        verdict = self.exchange.webhook
        assert verdict is not None
        provider = by_name(verdict.provider, BUILTIN)
        return webhook_section(verdict, title=provider.title if provider else "",
                               secret_env=provider.secret_env if provider else "")

    def _no_response(self) -> Text:
        ex = self.exchange
        if ex.error:
            text = Text("No response: ", end="")
            text.append(ex.error, "bold red")
            if ex.error_message:
                text.append(" - " + escape(ex.error_message))
            return text
        if ex.holding:
            return Text("No response yet: held until the app devtunnel runs is back (--hold).", end="")
        return Text("No response yet.", end="")

    def _timing(self) -> Text:
        ex = self.exchange
        rows: list[tuple[str, str | Text]] = [
            ("Started", format_timestamp(ex.started_at)),
            ("First byte", human_duration(ex.ttfb)),
            ("Duration", human_duration(ex.duration) if ex.duration is not None else
                         "held" if ex.holding else "in flight"),
            ("Request body", format_size(ex.request.body_size)),
            ("Response body", format_size(ex.size) if ex.response is not None else "-"),
            ("Client", escape(ex.remote_addr) or "-"),
            ("Forwarded to", escape(ex.target_url) or "-"),
            ("Tunnel", escape(ex.tunnel)),
            ("Id", ex.id),
        ]
        if ex.held is not None:
            # Its wait is in its first byte and duration: the app was down, not slow.
            rows.insert(2, ("Held", held_text(ex)))
        if ex.replay_of:
            rows.append(("Edited replay of" if ex.edited else "Replay of", ex.replay_of))
            if ex.resigned:
                rows.append(("Signature", f"re-signed ({escape(ex.resigned)})"))
        if ex.rule is not None:
            how = "routed" if ex.rule.action == "forward" else "answered"
            rows.append(("Rule", f"{ex.rule.label()} ({how} at the relay)"))
        if ex.websocket:
            code = "-" if ex.ws_close_code is None else str(ex.ws_close_code)
            rows.append(("WebSocket", f"{len(ex.ws_messages)} messages, close code {code}"))
        if ex.error:
            error = Text(ex.error, "bold red", end="")
            if ex.error_message:
                error.append(" - " + escape(ex.error_message), "red")
            rows.append(("Error", error))
        text = Text(end="")
        width = max(15, *(len(label) + 1 for label, _ in rows))
        for label, value in rows:
            text.append(f"{label:<{width}}", "bold")
            text.append(value)
            text.append("\n")
        text.rstrip()
        return text

    def _ws_messages(self) -> ComposeResult:
        lines = WsMessageLines(self.exchange)
        yield Static(lines.header(), id="ws-header")
        yield LinesView(lines, id="ws-messages")

    # ------------------------------------------------------------------ actions

    def action_close(self) -> None:
        """Close the screen."""
        self.dismiss(None)

    _SCROLLS: ClassVar[dict[str, tuple[str, str]]] = {
        # key: (a scrolling widget's action, a table's: its cursor moves)
        "down": ("scroll_down", "cursor_down"),
        "up": ("scroll_up", "cursor_up"),
        "page_down": ("page_down", "page_down"),
        "page_up": ("page_up", "page_up"),
        "home": ("scroll_home", "scroll_top"),
        "end": ("scroll_end", "scroll_bottom"),
    }

    def _scrolled(self) -> Widget | None:
        """What the scroll keys move: the focused view of the tab shown (its headers, say),
        otherwise the tab's body (its WebSocket messages on the Messages tab)."""
        pane = self.query_one(TabbedContent).active_pane
        if pane is None:
            return None
        focused = self.focused
        if isinstance(focused, (LinesView, DataTable, VerticalScroll)) and pane in focused.ancestors:
            return focused
        found = pane.query(".body-box LinesView, .body-box DataTable, #ws-messages")
        return found.first() if found else None

    def action_scroll(self, how: str) -> None:
        """Scroll the body of the tab shown (or the focused view: ``_scrolled``), whatever has
        the focus: the keys work as soon as the screen opens, on the tabs."""
        target = self._scrolled()
        if target is None:
            return
        plain, table = self._SCROLLS[how]
        try:
            getattr(target, f"action_{table if isinstance(target, DataTable) else plain}")()
        except SkipAction:
            pass  # nothing to scroll

    def action_tab(self, tab: str) -> None:
        """Show one tab."""
        if tab == "messages" and not self.exchange.websocket:
            return
        self.query_one(TabbedContent).active = tab

    async def _redraw_bodies(self) -> None:
        for side, message in (("request", self.exchange.request), ("response", self.exchange.response)):
            if message is None:
                continue
            box = self.query_one(f"#{side}-body-box", Vertical)
            await box.remove_children()
            await box.mount_compose(self._body(side, message))
            self.query_one(f"#{side}", MessagePane).fit()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "pretty":
            return parameters[0] != self._pretty  # p offers the other view: one binding at a time
        return True

    async def action_pretty(self, pretty: bool) -> None:
        """Show the bodies reformatted (JSON, XML, forms) or as received."""
        self._pretty = pretty
        self.refresh_bindings()
        await self._redraw_bodies()

    async def action_toggle_hex(self) -> None:
        """Switch the bodies to and from a hex dump."""
        self._hex = not self._hex
        await self._redraw_bodies()
