"""The help screen: every key (generated from the bindings), the table's marks and the filter language."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.geometry import Size
from textual.keys import format_key
from textual.widget import Widget
from textual.widgets import Static

from devtunnel.tui.screens.dialog import Dialog

KeySection = tuple[str, Sequence[BindingType]]
"""A titled group of bindings (``("Request table", RequestTable.BINDINGS)``)."""


def _as_binding(binding: BindingType) -> Binding:
    if isinstance(binding, Binding):
        return binding
    return Binding(*binding)


def key_label(keys: str) -> str:
    """A binding's keys as people write them: ``"question_mark,slash"`` -> ``"? / /"``, ``ctrl+s``."""
    return " / ".join(format_key(key.strip()) for key in keys.split(","))


def describe(binding: BindingType) -> str:
    """What a binding does, in full: its tooltip when the footer shows a shorter description."""
    binding = _as_binding(binding)
    return binding.tooltip or binding.description or binding.action.replace("_", " ")


def key_rows(bindings: Iterable[BindingType]) -> list[tuple[str, str]]:
    """``(keys, description)`` for each key, keys joined with `` / ``: the bindings of one key (``p``
    for the bodies as received and pretty-printed, each on while the other is off) make one row."""
    rows: dict[str, list[str]] = {}
    for binding in map(_as_binding, bindings):
        said = rows.setdefault(key_label(binding.key), [])
        if describe(binding) not in said:
            said.append(describe(binding))
    return [(keys, " / ".join(said)) for keys, said in rows.items()]


class KeyTable(Widget):
    """Rows of keys and what they do; a description too long for the width goes on under itself
    (a hanging indent), not under the keys."""

    DEFAULT_CSS = """
    KeyTable { height: auto; }
    """

    KEY_WIDTH = 28
    """The keys' column at most: longer keys push their description on."""

    def __init__(self, rows: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = list(rows)

    def _lines(self, width: int) -> list[Text]:
        keys = min(self.KEY_WIDTH, max((cell_len(k) for k, _ in self.rows), default=0))
        lines: list[Text] = []
        for key, description in self.rows:
            # Plain Text: the filter help mentions brackets and tildes that must not read as markup.
            lead = f"  {key}{' ' * (keys - cell_len(key))}  "
            indent = 2 + keys + 2
            if cell_len(lead) > indent and cell_len(lead) + cell_len(description) > width:
                # Keys past the column (the filter's longest examples): on a line of their own,
                # rather than the description squeezed into what they leave.
                lines.extend(Text("  ") + part for part in Text(key).wrap(self.app.console, max(10, width - 2),
                                                                        overflow="fold"))
                lead = " " * indent
            wrapped = Text(description).wrap(self.app.console, max(10, width - max(indent, cell_len(lead))),
                                             overflow="fold")
            for index, part in enumerate(wrapped):
                lines.append(Text(lead if index == 0 else " " * indent) + part)
        return lines

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._lines(width))

    def render(self) -> Text:
        return Text("\n").join(self._lines(self.content_size.width))


class HelpScreen(Dialog[None]):
    """Keys of every part of the inspector, the marks of the request table, then the filter language.

    | Key | Action |
    | :- | :- |
    | esc / q / ? | close |
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 100; height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    HelpScreen .help-title { text-style: bold; color: $text-accent; margin-top: 1; }
    """

    def __init__(self, sections: Sequence[KeySection], filter_help: Sequence[tuple[str, str]],
                 legend: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__()
        self.sections = sections
        self.filter_help = filter_help
        self.legend = legend
        """``(mark, meaning)`` of each mark the request table draws."""

    def compose_dialog(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "Help (esc to close)"
            for title, bindings in self.sections:
                yield Static(Text(title), classes="help-title")
                yield KeyTable(key_rows(bindings))
            if self.legend:
                yield Static(Text("Marks in the request table"), classes="help-title")
                yield KeyTable(self.legend)
            yield Static(Text("Filter language"), classes="help-title")
            yield KeyTable(self.filter_help)
