"""Export exchanges (curl, HAR, raw, httpie) to the clipboard or to a file with its side files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from devtunnel.tui.screens.dialog import Dialog
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from devtunnel.capture.model import Exchange
from devtunnel.errors import DevtunnelError, ExportError
from devtunnel.export import EXPORTERS, Export, export, options_of
from devtunnel.tui.clipboard import copy_text
from devtunnel.tui.render import message_text, safe_text

__all__ = ["ExportScreen", "SEND_TO", "clipboard_text", "copy_export", "write_export", "SUFFIXES"]

SUFFIXES = {"curl": ".sh", "har": ".har", "raw": ".http", "httpie": ".sh"}
"""File name endings offered for each format."""


def clipboard_text(result: Export, format: str) -> str:
    """The text of ``result`` when it can be copied alone: the one rule for every copy (the
    export dialog's clipboard choice and ``c``, copy as curl).

    Raises:
        ExportError: the text refers to side files (bodies or headers a pasted command cannot hold), which a copy cannot
            carry: the copied command would read files that were never written. The message
            names them and says what to do instead (export to a file, which writes them next to it).
    """
    if result.files:
        names = ", ".join(sorted(result.files))
        raise ExportError(
            f"this {format} export refers to {len(result.files)} side file(s) ({names}) for what a pasted "
            "command cannot carry (bytes that are not text, control characters such as a CR, or a large body): "
            "export it to a file instead "
            "(x, To: file), which writes them next to it"
        )
    return result.text


def copy_export(app: App[object], format: str, exchanges: Sequence[Exchange], **options: object) -> str:
    """Export and copy the text to the clipboard; returns where it went.

    Raises:
        ExportError: the format cannot export these exchanges, or the text needs side files
            (:func:`clipboard_text`), which only a file destination can hold.
    """
    return copy_text(app, clipboard_text(export(format, exchanges, **options), format))


def write_export(result: Export, path: Path) -> list[Path]:
    """Write the export text to ``path`` and its side files next to it.

    Side-file names are taken as the export spells them: absolute, or relative to ``path``'s folder.

    Returns:
        Every file written, ``path`` first.

    Raises:
        ExportError: a file cannot be written (the message names it).
    """
    written = [path]
    targets = [(path, result.text.encode("utf-8"))]
    for name, content in result.files.items():
        side = Path(name)
        targets.append((side if side.is_absolute() else path.parent / side, content))
        written.append(targets[-1][0])
    for target, content in targets:
        try:
            target.write_bytes(content)
        except OSError as exc:
            raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return written


SEND_TO = ("public", "local")
"""Where exported commands send their requests: the public URL or the tunnel's local service."""


def _where(exchange: Exchange, send_to: str) -> str:
    """The base URL a command for ``exchange`` would use, for the dialog's hint."""
    if send_to == "local":
        return exchange.target_url or "(no local service recorded)"
    host = exchange.request.host
    return f"{exchange.scheme}://{host}" if host else exchange.target_url or "(no Host header)"


class ExportScreen(Dialog[str | None]):
    """Choose a format, where commands send, options and a destination, then export.

    Dismisses with the sentence it notified, or None. ``exchanges`` are exported: the marked
    ones, or the one to export. A ``current`` one (the row at the cursor) that is not the only one
    given is offered instead: a choice says which, and starts on the ones given.

    | Key | Action |
    | :- | :- |
    | ctrl+s, enter (in the path) | Export. |
    | tab / shift+tab | Move between choices; arrows pick within a group. |
    | escape, q | Close without exporting (q types into the path field when it has the cursor). |
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close"),
        Binding("ctrl+s", "export", "Export", priority=True),
    ]

    class SendToChanged(Message):
        """The choice of public URL or local service changed (the copy action follows it)."""

        def __init__(self, screen: ExportScreen, send_to: str) -> None:
            super().__init__()
            self.screen = screen
            self.send_to = send_to
            """``"public"`` or ``"local"``."""

        @property
        def control(self) -> ExportScreen:
            return self.screen

    DEFAULT_CSS = """
    ExportScreen {
        align: center middle;
        #export-dialog {
            width: 80; max-width: 100%; height: auto; max-height: 100%;
            border: thick $primary; background: $surface; padding: 0 1;
        }
        #export-body { height: auto; max-height: 1fr; }
        .title { text-style: bold; margin-bottom: 1; }
        .group { height: auto; margin-bottom: 1; }
        .group Horizontal { height: auto; }
        .group Label { width: 10; }
        RadioSet { layout: horizontal; width: 1fr; & > RadioButton { width: auto; margin-right: 2; } }
        .hint { color: $text-muted; padding-left: 10; height: auto; }
        #path { margin-top: 1; }
        #path.hidden { display: none; }
        #export-message { height: auto; }
        #export-message.error { color: $text-error; }
        #export-buttons { dock: bottom; height: 1; align-horizontal: right; margin-top: 1; }
        #export-buttons Button { margin-left: 2; }
    }
    """

    def __init__(self, exchanges: Sequence[Exchange], current: Exchange | None = None, *, send_to: str = "public") -> None:
        super().__init__()
        self.exchanges = list(exchanges)
        self.current = current
        self.send_to = send_to if send_to in SEND_TO else "public"
        self._confirm_replace: Path | None = None

    @property
    def offers_current(self) -> bool:
        """True when the dialog offers the current exchange instead of the ones given (the marked ones)."""
        return self.current is not None and [e.id for e in self.exchanges] != [self.current.id]

    def _title(self) -> Text:
        marked = " marked" if self.offers_current else ""
        if len(self.exchanges) == 1:
            request = self.exchanges[0].request
            return Text(f"Export 1{marked} exchange: ", end="").append_text(
                safe_text(f"{request.method} {request.display_url}"))
        return Text(f"Export {len(self.exchanges)}{marked} exchanges", end="")

    def compose_dialog(self) -> ComposeResult:
        formats = list(EXPORTERS)
        with Vertical(id="export-dialog"):
            yield Static(self._title(), classes="title")
            with VerticalScroll(id="export-body"):
                with Horizontal(classes="group"):
                    yield Label("Format")
                    with RadioSet(id="format", compact=True):
                        for i, name in enumerate(formats):
                            yield RadioButton(name, value=i == 0, id=f"format-{name}", compact=True)
                if self.offers_current:
                    given = "the marked one" if len(self.exchanges) == 1 else f"the {len(self.exchanges)} marked"
                    with Horizontal(classes="group"):
                        yield Label("Exchanges")
                        with RadioSet(id="scope", compact=True):
                            yield RadioButton(given, value=True, id="scope-all", compact=True)
                            yield RadioButton("the current one", id="scope-current", compact=True)
                with Vertical(classes="group"):
                    with Horizontal():
                        yield Label("Send to")
                        with RadioSet(id="send-to", compact=True):
                            yield RadioButton("public URL", value=self.send_to == "public", id="send-public", compact=True)
                            yield RadioButton("local service", value=self.send_to == "local", id="send-local", compact=True)
                    yield Static(self._send_to_hint(formats[0]), id="send-to-hint", classes="hint")
                with Horizontal(classes="group"):
                    yield Label("Options")
                    yield Checkbox("Redact credentials, signatures and secret fields", value=False, id="redact", compact=True)
                with Horizontal(classes="group"):
                    yield Label("To")
                    with RadioSet(id="destination", compact=True):
                        yield RadioButton("clipboard", value=True, id="to-clipboard", compact=True)
                        yield RadioButton("file", id="to-file", compact=True)
                yield Input(f"devtunnel-export{SUFFIXES.get(formats[0], '.txt')}", id="path", classes="hidden", placeholder="path of the file")
                yield Static("", id="export-message")
            with Horizontal(id="export-buttons"):
                yield Button("Export", variant="primary", id="do-export", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    # ------------------------------------------------------------------ choices

    @property
    def format(self) -> str:
        """The chosen format."""
        pressed = self.query_one("#format", RadioSet).pressed_button
        return str(pressed.label) if pressed is not None else next(iter(EXPORTERS))

    @property
    def to_file(self) -> bool:
        """True when the destination is a file."""
        return self.query_one("#to-file", RadioButton).value

    def chosen(self) -> list[Exchange]:
        """The exchanges to export: every one given (the marked ones), or the current one when
        that was chosen."""
        scope = self.query("#scope-current")
        if self.current is not None and scope and scope.first(RadioButton).value:
            return [self.current]
        return self.exchanges

    def _send_to_hint(self, format: str) -> Text:
        if "base_url" not in options_of(format):
            return Text(f"{format} names no URL: the choice does not apply", end="")
        chosen = self.chosen()
        if not chosen:
            return Text("", end="")
        hint = Text("→ ", end="").append_text(safe_text(_where(chosen[0], self.send_to)))
        return hint.append("  (c, copy curl, sends there too)")

    @on(RadioSet.Changed, "#scope")
    def _scope_changed(self) -> None:
        self.query_one("#send-to-hint", Static).update(self._send_to_hint(self.format))

    @on(RadioSet.Changed, "#send-to")
    def _send_to_changed(self) -> None:
        self.send_to = "local" if self.query_one("#send-local", RadioButton).value else "public"
        self.query_one("#send-to-hint", Static).update(self._send_to_hint(self.format))
        self.post_message(self.SendToChanged(self, self.send_to))

    @on(RadioSet.Changed, "#format")
    def _format_changed(self) -> None:
        self._confirm_replace = None
        field = self.query_one("#path", Input)
        path = Path(field.value)
        if path.suffix in SUFFIXES.values() or not path.suffix:
            field.value = str(path.with_suffix(SUFFIXES.get(self.format, ".txt")))
        self.query_one("#redact", Checkbox).disabled = "redact" not in options_of(self.format)
        self.query_one("#send-to", RadioSet).disabled = "base_url" not in options_of(self.format)
        self.query_one("#send-to-hint", Static).update(self._send_to_hint(self.format))

    @on(RadioSet.Changed, "#destination")
    def _destination_changed(self) -> None:
        self.query_one("#path", Input).set_class(not self.to_file, "hidden")
        if self.to_file:
            self.query_one("#path", Input).focus()

    @on(Input.Changed, "#path")
    def _path_changed(self, event: Input.Changed) -> None:
        # Another file asks again; the same path (a change that arrives late) keeps the confirmation.
        if self._confirm_replace is not None and Path(event.value.strip()).expanduser().absolute() != self._confirm_replace:
            self._confirm_replace = None

    def _show(self, message: str, *, error: bool = False) -> None:
        widget = self.query_one("#export-message", Static)
        widget.update(message_text(message))
        widget.set_class(error, "error")

    # ------------------------------------------------------------------ actions

    @on(Button.Pressed, "#cancel")
    def action_close(self) -> None:
        """Close without exporting."""
        self.dismiss(None)

    @on(Input.Submitted, "#path")
    @on(Button.Pressed, "#do-export")
    def action_export(self) -> None:
        """Export with the chosen settings; errors stay on the screen."""
        format = self.format
        options: dict[str, object] = {}
        accepted = options_of(format)
        if "redact" in accepted:
            options["redact"] = self.query_one("#redact", Checkbox).value
        if "local" in accepted and self.send_to == "local":
            options["local"] = True
        if "webhooks" in accepted:  # pytest: signed from the variables devtunnel.toml names, as the CLI's
            options["webhooks"] = getattr(self.app, "webhooks", None)
        sentence: str | None
        try:
            if not self.to_file:
                sentence = copy_export(self.app, format, self.chosen(), **options)
            else:
                sentence = self._export_to_file(format, options, accepted)
        except DevtunnelError as exc:
            self._show(f"Not exported: {exc}", error=True)
            return
        if sentence is None:
            return
        self.app.notify(sentence, title="Export")
        self.dismiss(sentence)

    def _export_to_file(self, format: str, options: dict[str, object], accepted: list[str]) -> str | None:
        raw = self.query_one("#path", Input).value.strip()
        if not raw:
            raise ExportError("give the path of the file to write")
        path = Path(raw).expanduser().absolute()
        if not path.parent.is_dir():
            raise ExportError(f"no such folder: {path.parent}")
        if path.is_dir():
            raise ExportError(f"{path} is a folder: add a file name")
        if path.exists() and self._confirm_replace != path:
            self._confirm_replace = path
            self._show(f"{path} exists: press ctrl+s again to replace it.", error=True)
            return None
        if "body_dir" in accepted:
            options["body_dir"] = str(path.parent)
        if "path" in accepted:  # a pytest module's command to run it
            options["path"] = str(path)
        result = export(format, self.chosen(), **options)
        written = write_export(result, path)
        sentence = f"Exported {format} to {path}"
        if len(written) > 1:
            sentence += f" with {len(written) - 1} side file(s) next to it"
        return sentence
