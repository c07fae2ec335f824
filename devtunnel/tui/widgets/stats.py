"""A one-line stats strip: request rate as a sparkline and the status mix of the captures."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import ClassVar

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

SPARK = "▁▂▃▄▅▆▇█"
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "errors")
"""The status mix buckets, in display order."""


def sparkline(values: list[int]) -> str:
    """``values`` as block characters scaled to their maximum (blank-bottom for zero)."""
    top = max(values, default=0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, (v * (len(SPARK) - 1) + top - 1) // top)] for v in values)


class StatsStrip(Widget):
    """Requests per second over the last minute and counts per status class."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "stats--label", "stats--spark", "stats--2xx", "stats--3xx", "stats--4xx", "stats--5xx", "stats--errors",
    }

    DEFAULT_CSS = """
    StatsStrip {
        height: 1;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        background: $panel;
        & > .stats--label { color: $text-muted; }
        & > .stats--spark { color: $text-accent; }
        & > .stats--2xx { color: $text-success; }
        & > .stats--3xx { color: $text-primary; }
        & > .stats--4xx { color: $text-warning; }
        & > .stats--5xx { color: $text-error; }
        & > .stats--errors { color: $text-error; text-style: bold; }
    }
    """

    SECONDS = 30
    """Width of the sparkline, one cell per second."""

    status_mix: reactive[dict[str, int]] = reactive(dict, always_update=True)
    """Exchanges per status class (keys from ``STATUS_CLASSES``); empty until first counted (shown as ``…``)."""
    marker: reactive[str] = reactive("following")
    """The request table's mode: ``following`` or ``paused``."""
    shown: reactive[int] = reactive(0)
    """How many requests the table shows (after the filter)."""

    def __init__(self, *, clock: Callable[[], float] = time.time, id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self._buckets: deque[int] = deque([0] * self.SECONDS, maxlen=self.SECONDS)
        self._second = int(clock())

    def _roll(self) -> None:
        now = int(self._clock())
        for _ in range(min(self.SECONDS, max(0, now - self._second))):
            self._buckets.append(0)
        self._second = max(self._second, now)

    def count_requests(self, n: int) -> None:
        """Add ``n`` new requests to the current second."""
        self._roll()
        self._buckets[-1] += n
        self.refresh()

    def tick(self) -> None:
        """Advance the sparkline to the current second (call about once a second)."""
        self._roll()
        self.refresh()

    def set_mix(self, mix: Mapping[str, int]) -> None:
        """Show new status class counts."""
        self.status_mix = dict(mix)

    def render(self) -> Text:
        label = self.get_component_rich_style("stats--label", partial=True)
        values = list(self._buckets)
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append("● " if self.marker == "following" else "‖ ", style=label)
        line.append(self.marker.upper() if self.marker == "paused" else self.marker,
                    style=label if self.marker == "following" else self.get_component_rich_style("stats--4xx", partial=True))
        line.append(f"  {self.shown:,} shown  ", style=label)
        line.append(sparkline(values[-min(self.SECONDS, max(6, self.size.width // 8)):]),
                    style=self.get_component_rich_style("stats--spark", partial=True))
        # The last whole second: the current one is still counting (at 100/s it read 29/s a
        # third of a second in).
        line.append(f" {values[-2]}/s", style=label)
        for name in STATUS_CLASSES:
            line.append(f"  {'err' if name == 'errors' else name} ", style=label)
            # "…" until the store is counted (a large one takes a moment): 0 would say none.
            count = self.status_mix.get(name)
            line.append("…" if count is None else f"{count:,}",
                        style=self.get_component_rich_style(f"stats--{name}", partial=True))
        return line
