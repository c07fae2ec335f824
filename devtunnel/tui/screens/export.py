"""Export exchanges (curl, HAR, raw, httpie) to the clipboard or to a file with its side files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from devtunnel.capture.model import Exchange
from devtunnel.errors import DevtunnelError, ExportError
from devtunnel.export import EXPORTERS, Export, export, options_of
from devtunnel.tui.clipboard import copy_text

__all__ = ["ExportScreen", "copy_export", "write_export", "SUFFIXES"]

SUFFIXES = {"curl": ".sh", "har": ".har", "raw": ".http", "httpie": ".sh"}
"""File name endings offered for each format."""


def copy_export(app: App[object], format: str, exchanges: Sequence[Exchange], **options: object) -> str:
    """Export and copy the text to the clipboard; returns where it went.

    Raises:
        ExportError: the format cannot export these exchanges, or the text needs side files
            (binary or large bodies), which only a file destination can hold.
    """
    result = export(format, exchanges, **options)
    if result.files:
        raise ExportError(
            f"this {format} export refers to {len(result.files)} side file(s) for binary or large bodies: "
            "export it to a file instead"
        )
    return copy_text(app, result.text)


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


class ExportScreen(ModalScreen[str | None]):
    """Choose a format, options and a destination, then export; returns the sentence shown.

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

    DEFAULT_CSS = """
    ExportScreen {
        align: center middle;
        #export-dialog {
            width: 80; height: auto; max-height: 90%;
            border: thick $primary; background: $surface; padding: 0 1;
        }
        .title { text-style: bold; margin-bottom: 1; }
        .group { height: auto; }
        .group Label { width: 14; padding: 1 0; }
        RadioSet { width: 1fr; }
        #path { margin-top: 1; }
        #path.hidden { display: none; }
        #export-message { height: auto; margin-top: 1; }
        #export-message.error { color: $text-error; }
        #export-buttons { height: auto; align-horizontal: right; margin-top: 1; }
        #export-buttons Button { margin-left: 1; }
    }
    """

    def __init__(self, exchanges: Sequence[Exchange], current: Exchange | None = None) -> None:
        super().__init__()
        self.exchanges = list(exchanges)
        self.current = current
        self._confirm_replace: Path | None = None

    def compose(self) -> ComposeResult:
        formats = list(EXPORTERS)
        with Vertical(id="export-dialog"):
            yield Static(f"Export · {len(self.exchanges)} exchange(s) listed", classes="title", markup=False)
            with Horizontal(classes="group"):
                yield Label("Format")
                with RadioSet(id="format"):
                    for i, name in enumerate(formats):
                        yield RadioButton(name, value=i == 0, id=f"format-{name}")
            if self.current is not None and len(self.exchanges) > 1:
                with Horizontal(classes="group"):
                    yield Label("Exchanges")
                    with RadioSet(id="scope"):
                        yield RadioButton("the selected one", value=True, id="scope-current")
                        yield RadioButton(f"all {len(self.exchanges)} listed", id="scope-all")
            with Horizontal(classes="group"):
                yield Label("Options")
                yield Checkbox("Redact credentials and signatures", value=False, id="redact")
            with Horizontal(classes="group"):
                yield Label("To")
                with RadioSet(id="destination"):
                    yield RadioButton("clipboard", value=True, id="to-clipboard")
                    yield RadioButton("file", id="to-file")
            yield Input(f"devtunnel-export{SUFFIXES.get(formats[0], '.txt')}", id="path", classes="hidden", placeholder="path of the file")
            yield Static("", id="export-message")
            with Horizontal(id="export-buttons"):
                yield Button("Export", variant="primary", id="do-export")
                yield Button("Cancel", id="cancel")

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
        """The exchanges to export: the selected one, or all listed."""
        scope = self.query("#scope-all")
        if self.current is not None and not (scope and scope.first(RadioButton).value):
            return [self.current]
        return self.exchanges

    @on(RadioSet.Changed, "#format")
    def _format_changed(self) -> None:
        self._confirm_replace = None
        field = self.query_one("#path", Input)
        path = Path(field.value)
        if path.suffix in SUFFIXES.values() or not path.suffix:
            field.value = str(path.with_suffix(SUFFIXES.get(self.format, ".txt")))
        self.query_one("#redact", Checkbox).disabled = "redact" not in options_of(self.format)

    @on(RadioSet.Changed, "#destination")
    def _destination_changed(self) -> None:
        self.query_one("#path", Input).set_class(not self.to_file, "hidden")
        if self.to_file:
            self.query_one("#path", Input).focus()

    @on(Input.Changed, "#path")
    def _path_changed(self) -> None:
        self._confirm_replace = None

    def _show(self, message: str, *, error: bool = False) -> None:
        widget = self.query_one("#export-message", Static)
        widget.update(Text(message, end=""))
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
        result = export(format, self.chosen(), **options)
        written = write_export(result, path)
        sentence = f"Exported {format} to {path}"
        if len(written) > 1:
            sentence += f" with {len(written) - 1} side file(s) next to it"
        return sentence
