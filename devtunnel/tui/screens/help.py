"""The help screen: every key (generated from the bindings), the table's marks and the filter language."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.keys import format_key
from devtunnel.tui.screens.dialog import Dialog
from textual.widgets import Static

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
    """``(keys, description)`` for each binding, keys joined with `` / ``."""
    return [(key_label(binding.key), describe(binding)) for binding in map(_as_binding, bindings)]


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

    @staticmethod
    def _table(rows: Sequence[tuple[str, str]]) -> Text:
        width = min(28, max((len(k) for k, _ in rows), default=0))
        # Plain Text: the filter help mentions brackets and tildes that must not read as markup.
        return Text("\n").join(Text(f"  {k.ljust(width)}  {d}") for k, d in rows)

    def compose_dialog(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "Help (esc to close)"
            for title, bindings in self.sections:
                yield Static(Text(title), classes="help-title")
                yield Static(self._table(key_rows(bindings)))
            if self.legend:
                yield Static(Text("Marks in the request table"), classes="help-title")
                yield Static(self._table(list(self.legend)))
            yield Static(Text("Filter language"), classes="help-title")
            yield Static(self._table(list(self.filter_help)))
