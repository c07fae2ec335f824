"""Rate limiting for repeated log lines: the first of a kind is written, the rest are counted.

A peer can make the same mistake thousands of times a second; the log should say so in two
lines, not thousands. ``LogThrottle`` decides, per kind of message, whether an occurrence is
written or only counted, and hands out the counts as summaries once their interval is over.
It keeps no timer and does no IO: the caller asks ``summaries()`` when ``next_due()`` says.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class _Window:
    __slots__ = ("count", "end")

    def __init__(self, end: float) -> None:
        self.end = end
        self.count = 0


class LogThrottle:
    """Per kind of message: the first occurrence is written, the rest of the interval counted.

    After an interval with occurrences counted, ``summaries()`` returns the count once and a new
    interval starts in which occurrences are still only counted, so a steady flood gives one
    summary per interval. After an interval with none, the next occurrence is written again.

    Args:
        interval: seconds each kind stays quiet after a line about it.
        clock: monotonic seconds (a seam for tests).
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be more than 0 seconds, not {interval!r}")
        self.interval = interval
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def admit(self, kind: str) -> bool:
        """Whether to write this occurrence of ``kind`` now; False means it was counted."""
        now = self._clock()
        window = self._windows.get(kind)
        if window is None or (window.count == 0 and now >= window.end):
            self._windows[kind] = _Window(now + self.interval)
            return True
        window.count += 1
        return False

    def summaries(self) -> list[tuple[str, int]]:
        """``(kind, count)`` for each kind whose interval is over with occurrences not written."""
        now = self._clock()
        due: list[tuple[str, int]] = []
        for kind, window in list(self._windows.items()):
            if now < window.end:
                continue
            if window.count:
                due.append((kind, window.count))
                window.count = 0
                window.end = now + self.interval
            else:
                del self._windows[kind]
        return due

    def drain(self) -> list[tuple[str, int]]:
        """``(kind, count)`` for every kind with occurrences not written, due or not; forgets all."""
        counts = [(kind, window.count) for kind, window in self._windows.items() if window.count]
        self._windows.clear()
        return counts

    def next_due(self) -> float | None:
        """When (on ``clock``) the next summary is due; None while nothing is counted."""
        ends = [window.end for window in self._windows.values() if window.count]
        return min(ends) if ends else None
