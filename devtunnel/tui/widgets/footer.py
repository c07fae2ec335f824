"""The key bar of every screen: Textual's ``Footer``, fitted to the terminal's width, always
showing how to quit, and letting go of the keys it recomposed away."""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.actions import parse as parse_action
from textual.geometry import Size
from textual.widgets import Footer as TextualFooter
from textual.widgets._footer import FooterKey


class Footer(TextualFooter):
    """Textual's key bar, showing the keys that fit and the key that quits, without the dead keys
    its recompose leaves behind.

    Keys that do not fit beside the ``^p palette`` key at the right are left out, the last ones
    first, so none is cut in half or hidden under the palette key: at 80 columns with the tunnels
    panel focused, ``q Quit`` was cut to ``q``. The keys of ``KEPT`` (how to leave, how to find
    the others) are left out last. Every key, shown or not, is listed by the help screen (``?``)
    and the command palette (``ctrl+p``).

    Where no key on the bar quits (``q`` types in the filter, or closes the screen on top), the
    bar ends with ``^c Quit``: ctrl+c quits from anywhere, and the bar always says how to.

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

    KEPT: ClassVar[frozenset[str]] = frozenset({"quit", "help", "close", "dismiss"})
    """Actions whose keys are left out last: leaving the inspector or a screen, and the help."""

    QUIT_KEY: ClassVar[str] = "ctrl+c"
    """The key that quits from anywhere (a priority binding of the app's)."""

    async def recompose(self) -> None:
        async with self.batch():  # one frame: the keys, the quit key, those that fit
            await super().recompose()
            if self.is_attached and not self._pruning:  # else its screen closed meanwhile: nothing was composed
                await self._add_quit_key()
            # Setting ``compact`` (to the value it has) drops the watchers of the removed keys.
            self.mutate_reactive(TextualFooter.compact)
            self._fit()

    def on_resize(self, event: events.Resize) -> None:
        self._fit()

    def _keys(self) -> list[FooterKey]:
        """The bar's keys but the palette's, in order."""
        return [key for key in self.query_children(FooterKey) if not key.has_class("-command-palette")]

    async def _add_quit_key(self) -> None:
        """End the bar with ``^c Quit`` where none of its keys quits and ctrl+c does."""
        active = self.screen.active_bindings.get(self.QUIT_KEY)
        if (active is None or parse_action(active.binding.action)[1] != "quit"
                or any(parse_action(key.action)[1] == "quit" for key in self._keys())):
            return
        binding = active.binding
        key = FooterKey(binding.key, self.app.get_key_display(binding), binding.description, binding.action,
                        disabled=not active.enabled, tooltip=binding.tooltip)
        palette = [key for key in self.query_children(FooterKey) if key.has_class("-command-palette")]
        await self.mount(key.data_bind(compact=TextualFooter.compact), before=palette[0] if palette else None)

    def _width(self, key: FooterKey) -> int:
        """The cells ``key`` takes on the bar, margins included."""
        size = Size(self.size.width, 1)
        return key.get_content_width(size, size) + key.styles.gutter.width + key.styles.margin.width

    def _fit(self) -> None:
        """Show the keys that fit beside the palette key, leaving out the last ones first."""
        keys = self._keys()
        if not keys or self.size.width <= 0:
            return
        palette = sum(self._width(key) for key in self.query_children(FooterKey) if key.has_class("-command-palette"))
        widths = {key: self._width(key) for key in keys}
        room = self.size.width - palette
        shown = list(keys)
        for kept in (False, True):  # the others first, from the right; the kept ones only in a narrow terminal
            for key in reversed(keys):
                if sum(widths[k] for k in shown) <= room:
                    break
                if (parse_action(key.action)[1] in self.KEPT) == kept:
                    shown.remove(key)
        for key in keys:
            key.display = key in shown
