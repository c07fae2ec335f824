"""The new-tunnel form: target, name and relay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from devtunnel.tui.screens.dialog import Dialog
from textual.widgets import Button, Input, Label, Static

from devtunnel.tui.render import message_text
from devtunnel.errors import ConfigError
from devtunnel.values.names import validate_name
from devtunnel.values.relay_url import relay_connect_url
from devtunnel.values.target import parse_target


@dataclass(frozen=True)
class TunnelRequest:
    """What the form asks for."""

    target: str
    name: str = ""
    relay: str = ""


def check(target: str, name: str, relay: str) -> str | None:
    """The problem with the form's values, or None when they can be sent: the rules and words
    of ``devtunnel http`` and the agent API (``parse_target``, ``validate_name``,
    ``relay_connect_url``), so the form neither refuses what they take (a name in capitals,
    lowered) nor takes what they refuse (a reserved name, a relay URL with a password)."""
    if not target:
        return "target is required: a port (8080), HOST:PORT or a URL"
    try:
        parse_target(target)
        if name:
            validate_name(name)
        if relay:
            relay_connect_url(relay)
    except ConfigError as exc:
        return str(exc)
    return None


class NewTunnelScreen(Dialog[TunnelRequest | None]):
    """A small form; dismisses with a ``TunnelRequest`` (or None when cancelled).

    | Key | Action |
    | :- | :- |
    | enter | start the tunnel |
    | esc | cancel |
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    DEFAULT_CSS = """
    NewTunnelScreen { align: center middle; }
    NewTunnelScreen > Vertical {
        width: 64; height: auto; border: round $primary; background: $surface; padding: 0 1;
    }
    NewTunnelScreen Input { margin-bottom: 0; }
    NewTunnelScreen #tunnel-error { color: $text-error; height: auto; }
    NewTunnelScreen Horizontal { height: auto; align-horizontal: right; }
    """

    def __init__(self, target: str = "") -> None:
        super().__init__()
        self._initial_target = target

    def compose_dialog(self) -> ComposeResult:
        with Vertical() as form:
            form.border_title = "New tunnel"
            yield Label("Target (port, HOST:PORT or URL)")
            yield Input(self._initial_target, placeholder="8080", id="target")
            yield Label("Name (optional)")
            yield Input(placeholder="a random readable name", id="name")
            yield Label("Relay (optional; embedded relay when empty)")
            yield Input(placeholder="wss://tunnel.example.com", id="relay")
            yield Static("", id="tunnel-error")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Start", variant="primary", id="start")

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value.strip()

    @on(Input.Submitted)
    @on(Button.Pressed, "#start")
    def submit(self) -> None:
        """Check the values; dismiss with them, or say what is wrong."""
        target, name, relay = self._value("target"), self._value("name"), self._value("relay")
        problem = check(target, name, relay)
        if problem is not None:
            self.query_one("#tunnel-error", Static).update(message_text(problem))
            return
        self.dismiss(TunnelRequest(target, name, relay))

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)
