"""A one-line stats strip: request rate as a sparkline and the status mix of the captures."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import ClassVar

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

SPARK = "▁▂▃▄▅▆▇█"
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "errors", "pending")
"""The status mix buckets, in display order: each request shown is in one of them
(``devtunnel.tui.live.STATUS_FILTERS``)."""

BUCKET_LABELS = {"errors": "err", "pending": "open"}
"""What the line calls a bucket, where it is not its name."""

SHOWN_WHEN_ANY = frozenset({"1xx", "pending"})
"""Buckets left off the line while they hold nothing: WebSockets' 101s, requests not answered yet."""


def sparkline(values: list[int]) -> str:
    """``values`` as block characters scaled to their maximum (blank-bottom for zero)."""
    top = max(values, default=0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, (v * (len(SPARK) - 1) + top - 1) // top)] for v in values)


class RequestRate:
    """New requests a second, of each tunnel, over the last ``seconds``, and each tunnel's total:
    the one count behind the stats strip's figure and sparkline and the tunnels panel's rates and
    request counts, so they agree.

    Requests are counted in the second they are first announced, before their tunnels are read
    (``count``); ``attribute`` then names their tunnels in that same second, and adds them to
    their tunnels' totals (``total``), or takes back the replays among them (not requests
    through a tunnel: the agent API does not count them either).

    Args:
        seconds: how many seconds are kept.
        clock: the time in seconds (``time.time``).
    """

    UNKNOWN = ""
    """The key of requests whose tunnel is not known (yet)."""

    def __init__(self, seconds: int = 30, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: deque[Counter[str]] = deque((Counter() for _ in range(seconds)), maxlen=seconds)
        self._second = int(clock())
        self._listeners: list[Callable[[], None]] = []
        self._totals: Counter[str] = Counter()
        """Requests named so far, by tunnel (by name: a tunnel stopped and started again goes on counting)."""

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the figures change: a second ends, or requests are counted or named."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in self._listeners:
            callback()

    def _roll(self) -> None:
        now = int(self._clock())
        if now <= self._second:
            return
        for _ in range(min(len(self._buckets), now - self._second)):
            self._buckets.append(Counter())
        self._second = now
        self._changed()

    def count(self, n: int) -> int:
        """Count ``n`` new requests now, their tunnels not known yet; the second they count in."""
        self._roll()
        if n:
            self._buckets[-1][self.UNKNOWN] += n
            self._changed()
        return self._second

    def attribute(self, second: int, tunnels: Mapping[str, int], *, dropped: int = 0) -> None:
        """Name the tunnels of requests counted in ``second`` (``{tunnel: how many}``), and take
        back ``dropped`` of them that are not requests of a tunnel after all (replays)."""
        self._roll()
        age = self._second - second
        # Out of the window meanwhile (named after a read slower than the window): in the totals only.
        bucket = self._buckets[-1 - age] if 0 <= age < len(self._buckets) else Counter({self.UNKNOWN: sum(tunnels.values())})
        bucket[self.UNKNOWN] -= min(dropped, bucket[self.UNKNOWN])
        for tunnel, n in tunnels.items():
            n = min(n, bucket[self.UNKNOWN])
            if n > 0 and tunnel != self.UNKNOWN:
                bucket[self.UNKNOWN] -= n
                bucket[tunnel] += n
                self._totals[tunnel] += n
        self._changed()

    def total(self, tunnel: str) -> int:
        """Requests of ``tunnel`` named so far, whenever they came."""
        return self._totals[tunnel]

    def series(self) -> list[int]:
        """Requests in each second kept, oldest first, the current one (still counting) last."""
        self._roll()
        return [sum(bucket.values()) for bucket in self._buckets]

    def last_second(self, tunnel: str | None = None) -> int:
        """Requests in the last whole second (the current one is still counting): all, or ``tunnel``'s."""
        self._roll()
        bucket = self._buckets[-2]
        return sum(bucket.values()) if tunnel is None else bucket[tunnel]


class StatsStrip(Widget):
    """Requests per second over the last minute and counts per status class."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "stats--label", "stats--spark", "stats--1xx", "stats--2xx", "stats--3xx", "stats--4xx", "stats--5xx",
        "stats--errors", "stats--pending",
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
        & > .stats--1xx { color: $text-primary; }
        & > .stats--2xx { color: $text-success; }
        & > .stats--3xx { color: $text-primary; }
        & > .stats--4xx { color: $text-warning; }
        & > .stats--5xx { color: $text-error; }
        & > .stats--errors { color: $text-error; text-style: bold; }
        & > .stats--pending { color: $text-muted; }
    }
    """

    SECONDS = 30
    """Width of the sparkline, one cell per second."""

    status_mix: reactive[dict[str, int]] = reactive(dict, always_update=True)
    """The requests shown per status class (keys from ``STATUS_CLASSES``, adding up to ``shown``
    once counted); empty until first counted (shown as ``…``)."""
    marker: reactive[str] = reactive("following")
    """The request table's mode: ``following`` or ``paused``."""
    shown: reactive[int] = reactive(0)
    """How many requests the table shows (after the filter)."""

    def __init__(self, *, clock: Callable[[], float] = time.time, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rate = RequestRate(self.SECONDS, clock=clock)
        """The requests a second shown, which the tunnels panel reads too."""
        self.rate.listen(self.refresh)

    def count_requests(self, n: int) -> int:
        """Add ``n`` new requests to the current second; the second they count in (``RequestRate.count``)."""
        return self.rate.count(n)

    def tick(self) -> None:
        """Advance the sparkline to the current second (call about once a second)."""
        self.rate.series()
        self.refresh()

    def set_mix(self, mix: Mapping[str, int]) -> None:
        """Show new status class counts."""
        self.status_mix = dict(mix)

    def render(self) -> Text:
        label = self.get_component_rich_style("stats--label", partial=True)
        values = self.rate.series()
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append("● " if self.marker == "following" else "‖ ", style=label)
        line.append(self.marker.upper() if self.marker == "paused" else self.marker,
                    style=label if self.marker == "following" else self.get_component_rich_style("stats--4xx", partial=True))
        line.append(f"  {self.shown:,} shown  ", style=label)
        # The last whole second: the current one is still counting (at 100/s it read 29/s a
        # third of a second in).
        tail = Text(f" {self.rate.last_second()}/s", style=label)
        for name in STATUS_CLASSES:
            # "…" until the store is counted (a large one takes a moment): 0 would say none.
            count = self.status_mix.get(name)
            if name in SHOWN_WHEN_ANY and not count:
                continue
            tail.append(f"  {BUCKET_LABELS.get(name, name)} ", style=label)
            tail.append("…" if count is None else f"{count:,}",
                        style=self.get_component_rich_style(f"stats--{name}", partial=True))
        # The sparkline gives way (down to 6 seconds) to the buckets: at 80 columns all fit.
        room = self.content_size.width - line.cell_len - tail.cell_len
        line.append(sparkline(values[-min(self.SECONDS, max(6, min(self.size.width // 8, room))):]),
                    style=self.get_component_rich_style("stats--spark", partial=True))
        line.append_text(tail)
        return line
