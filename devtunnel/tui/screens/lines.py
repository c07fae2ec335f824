"""A scrolling view that renders only the rows on screen, for bodies of any size."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from devtunnel.tui.render import Lines, TextLines


class _NoLines:
    width = 0

    def __len__(self) -> int:
        return 0

    def line(self, index: int) -> Text:
        raise IndexError(index)  # an empty document has no rows to ask for


class LinesView(ScrollView, can_focus=True):
    """Shows a :class:`~devtunnel.tui.render.Lines` document, asking it only for visible rows.

    A 10 MiB body is 650,000 hex rows; this widget renders the 40 on screen (Textual's Line API).
    With ``fold``, a text document is folded at the view's width (again on every resize), so
    a long line reads from top to bottom instead of running past the right edge.

    | Key | Action |
    | :- | :- |
    | up / down / pageup / pagedown | Scroll by a row or a page. |
    | home / end | Go to the first or last row. |
    | left / right | Scroll sideways. |
    """

    DEFAULT_CSS = """
    LinesView {
        height: 1fr;
        background: $surface;
        &:focus { background-tint: $foreground 4%; }
    }
    """

    def __init__(self, lines: Lines | None = None, *, fold: bool = False, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._lines: Lines = lines if lines is not None else _NoLines()
        self._source = lines if fold and isinstance(lines, TextLines) else None
        self._cache: LRUCache[int, Strip] = LRUCache(512)
        self.virtual_size = Size(self._lines.width, len(self._lines))

    @property
    def lines(self) -> Lines:
        """The document shown."""
        return self._lines

    def show(self, lines: Lines, *, keep_position: bool = False) -> None:
        """Replace the document (as it is: not folded); go back to its top unless ``keep_position``."""
        self._lines = lines
        self._cache.clear()
        self.virtual_size = Size(lines.width, len(lines))
        if not keep_position:
            self.scroll_to(0, 0, animate=False)
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        if self._source is not None:
            # The vertical scrollbar's column is always left free, so folding cannot make it
            # appear and change the width it was folded for.
            width = self.scrollable_content_region.width + (self.scrollbar_size_vertical if self.show_vertical_scrollbar else 0)
            width -= self.styles.scrollbar_size_vertical
            if width > 0 and width != self._lines.width:
                self.show(self._source.folded(width), keep_position=True)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache.clear()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        style = self.rich_style
        if index >= len(self._lines):
            return Strip.blank(width, style)
        strip = self._cache.get(index)
        if strip is None:
            text = self._lines.line(index)
            console = self.app.console
            # Text.render leaves out the text's own base style: put it under the spans here.
            base = style + console.get_style(text.style, default=Style.null()) if text.style else style
            segments = list(Segment.apply_style(text.render(console), base))
            strip = Strip(segments, text.cell_len)
            self._cache[index] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)
