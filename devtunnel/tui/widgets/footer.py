"""The key bar of every screen: Textual's ``Footer``, letting go of the keys it recomposed away."""

from __future__ import annotations

from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    """Textual's key bar, without the dead keys its recompose leaves behind.

    The bar recomposes whenever the bindings change: a screen pushed or popped, the focus moved.
    Each key it makes is bound to the bar's ``compact`` (``data_bind``), which puts a watcher on
    the bar, and Textual lets go of the watcher of a removed key only when ``compact`` is set
    (Textualize/textual#6666, open in 8.2.8), which never happens here: each detail or help screen
    opened and closed kept a bar's worth of dead keys, each with its rendered lines, for the life
    of the inspector (about 0.25 MB a screen).

    The compact bar gives every key a right margin, the ``^p palette`` key docked at the right
    too: in a terminal too narrow for every key, the key under that free last cell showed
    through (``^p paletteq``). Here the palette key ends at the edge.
    """

    DEFAULT_CSS = """
    Footer.-compact FooterKey.-command-palette { margin-right: 0; }
    """

    async def recompose(self) -> None:
        await super().recompose()
        # Setting ``compact`` (to the value it has) drops the watchers of the removed keys.
        self.mutate_reactive(TextualFooter.compact)
