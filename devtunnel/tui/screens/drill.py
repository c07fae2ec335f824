"""The drill form: "answer the next N requests like this one with STATUS", at the relay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from devtunnel.tui.screens.dialog import Dialog
from textual.widgets import Button, Input, Label, Static

from devtunnel.capture.model import Exchange
from devtunnel.rules.model import BODILESS
from devtunnel.tui.render import message_text
from devtunnel.values.terminal import as_text
from devtunnel.values.numbers import is_decimal


@dataclass(frozen=True)
class Drill:
    """What the form asks for: the ``respond`` rule to add to the exchange's tunnel."""

    tunnel: str
    match: str
    count: int
    status: int

    def rule(self) -> dict[str, Any]:
        """The rule as the agent API takes it; a 204 or 304 (``BODILESS``) without the body
        that says where the answer came from, which the rules refuse after such a head."""
        rule: dict[str, Any] = {"action": "respond", "match": self.match, "status": self.status, "count": self.count}
        if self.status not in BODILESS:
            rule["body"] = f"devtunnel drill: answered {self.status} at the relay\n"
        return rule


def like(exchange: Exchange) -> str:
    """The filter that matches requests like ``exchange``: its method and its path."""
    path = exchange.request.path.replace("\\", "\\\\").replace('"', '\\"')
    return f'method:{exchange.request.method} path:"{path}"'


def check(count: str, status: str) -> str | None:
    """The problem with the form's values, or None."""
    if not is_decimal(count) or not 1 <= int(count) <= 10_000:
        return "count must be a whole number from 1 to 10000"
    if not is_decimal(status) or not 200 <= int(status) <= 599:
        return "status must be an HTTP status from 200 to 599"
    return None


class DrillScreen(Dialog[Drill | None]):
    """Dismisses with a ``Drill`` (or None when cancelled).

    | Key | Action |
    | :- | :- |
    | enter | add the rule at the relay |
    | esc | cancel |
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    DEFAULT_CSS = """
    DrillScreen { align: center middle; }
    DrillScreen > Vertical {
        width: 64; height: auto; border: round $primary; background: $surface; padding: 0 1;
    }
    DrillScreen #drill-error { color: $text-error; height: auto; }
    DrillScreen Horizontal { height: auto; align-horizontal: right; }
    """

    def __init__(self, exchange: Exchange) -> None:
        super().__init__()
        self.exchange = exchange

    def compose_dialog(self) -> ComposeResult:
        ex = self.exchange
        with Vertical() as form:
            form.border_title = "Drill: answer at the relay"
            what = Text("Requests like ")
            what.append_text(as_text(f"{ex.request.method} {ex.request.display_path}", "bold"))
            what.append(f" on tunnel {ex.tunnel} never reach the local service until the count is spent.")
            yield Static(what)
            yield Label("How many of the next requests")
            yield Input("3", id="count")
            yield Label("Answer with status")
            yield Input("500", id="status")
            yield Static("", id="drill-error")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Add rule", variant="primary", id="add")

    @on(Input.Submitted)
    @on(Button.Pressed, "#add")
    def submit(self) -> None:
        """Check the values; dismiss with the drill, or say what is wrong."""
        count = self.query_one("#count", Input).value.strip()
        status = self.query_one("#status", Input).value.strip()
        problem = check(count, status)
        if problem is not None:
            self.query_one("#drill-error", Static).update(message_text(problem))
            return
        self.dismiss(Drill(self.exchange.tunnel, like(self.exchange), int(count), int(status)))

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)
