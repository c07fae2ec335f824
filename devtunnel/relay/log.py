"""The relay's log lines about peers' bad input, rate-limited per kind (``values.logthrottle``).

Every line a peer can cause by misbehaving goes through ``PeerErrorLog.log``: the first of each
kind in an interval is written as is, the others are counted and written as one summary line
("N more invalid HTTP requests in the last 10 s") when the interval ends. None carries a
traceback: a peer's bad input is its fault, not a defect of ours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from devtunnel.values.logthrottle import LogThrottle

#: What a summary line calls the occurrences of each kind (plural).
KINDS = {
    "invalid-http": "invalid HTTP requests",
    "unsupported-upgrade": "requests with an unsupported Upgrade",
    "invalid-utf8": "WebSocket text messages that were not UTF-8",
    "body-stalled": "stalled request bodies",
    "client-share": "requests over a client address's share of a tunnel",
    "agent-refused": "agents refused",
    "agent-token-refused": "agents refused for their token",
    "invalid-response": "agent responses that were not valid HTTP",
    "held-responses": "streams reset for holding responses their clients had not read",
    "pending-refused": "connections refused for their address's connections waiting to send a request",
    "pending-dropped": "connections waiting to send a request dropped to make room",
    "pool-failover": "requests sent to another agent of their pool after a refusal",
    "open-refused": "connections refused for their address's open connections",
    "body-slow": "request bodies too slow",
    "descriptors-low": "connections accepted with the relay short of file descriptors",
    "accept-failed": "connections the relay could not accept for want of file descriptors",
}


class PeerErrorLog:
    """Writes peer-caused log lines to ``logger``, at most one per kind per interval plus a summary.

    Args:
        logger: where the lines go.
        interval: seconds between lines of one kind.
        clock: monotonic seconds (a seam for tests; the summary timer runs on the event loop).
    """

    def __init__(
        self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self._throttle = LogThrottle(interval, clock)
        self._clock = clock
        self._levels: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def log(self, kind: str, level: int, message: str, *args: object) -> None:
        """Write ``message % args`` unless a line of ``kind`` was written within the interval."""
        self._levels[kind] = level
        if self._throttle.admit(kind):
            self.logger.log(level, message, *args)
        elif self._timer is None or self._timer_loop is not _running_loop():
            self._arm()  # none yet, or one on a loop that is gone (a process runs one relay at a time)

    def flush(self) -> None:
        """Write the summaries that are due (the timer calls this; so can a test)."""
        self._timer = None
        self._summarise(self._throttle.summaries())
        if self._throttle.next_due() is not None:
            self._arm()

    def close(self) -> None:
        """Write every count not yet summarised and stop the timer (the relay stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._summarise(self._throttle.drain())

    def _summarise(self, counts: list[tuple[str, int]]) -> None:
        interval = self._throttle.interval
        for kind, count in counts:
            what = KINDS.get(kind, kind)
            self.logger.log(self._levels.get(kind, logging.INFO), "%d more %s in the last %g s", count, what, interval)

    def _arm(self) -> None:
        due = self._throttle.next_due()
        loop = _running_loop()
        if due is None or loop is None:  # no loop: a test calling log directly flushes by hand
            return
        if self._timer is not None:
            self._timer.cancel()
        # A hair late rather than early: the loop's clock and ours may round differently.
        self._timer = loop.call_later(max(0.0, due - self._clock()) + 0.001, self.flush)
        self._timer_loop = loop


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
