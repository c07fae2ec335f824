"""The base of the inspector's dialogs: a modal screen with its own key bar.

A modal screen draws over the screen below, key bar included, and that bar lists the keys of the
screen below, which do nothing while the dialog is open. Every dialog derives from ``Dialog`` and
writes ``compose_dialog``; ``Dialog`` adds a key bar of its own, which covers the one below and
lists the keys that work in the dialog.
"""

from __future__ import annotations

from typing import TypeVar

from textual.app import ComposeResult
from textual.screen import ModalScreen

from devtunnel.tui.widgets.footer import Footer

__all__ = ["Dialog"]

ResultType = TypeVar("ResultType")


class Dialog(ModalScreen[ResultType]):
    """A modal screen whose key bar shows its own keys: subclasses write ``compose_dialog``."""

    def compose(self) -> ComposeResult:
        yield from self.compose_dialog()
        yield Footer(compact=True)

    def compose_dialog(self) -> ComposeResult:
        """The dialog's widgets (the key bar comes after them)."""
        yield from ()
