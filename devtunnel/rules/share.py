"""What the ``match`` regexes of one tunnel's rules may take of the relay's event loop over time.

The relay decides on its event loop, so while a rule's regex searches, no other tunnel's request
moves. ``RULES_REGEX_BUDGET`` bounds one request; this module bounds a tunnel over time. Each
tunnel has a ``TimeShare`` (a token bucket of seconds: it earns ``rate`` seconds a second, holds at
most ``burst``), and so has each token, for all the tunnels of its holder together (a token may
hold many names). A ``RegexMeter`` draws one tunnel's regex time from both: a rule whose match
holds a regex runs only while both have time left, and within what is left; the time it took, by
the meter's clock, is taken from both. When one is spent the request is answered without
running the regex (``Engine``: 503 with ``Retry-After``) until it has refilled.

Pure and synchronous: the clock is an attribute (``time.monotonic`` by default), so a test
counts what a tunnel spent by a clock of its own rather than by timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from devtunnel.capture.filters import Filter, regex_budget
from devtunnel.capture.model import Exchange

TUNNEL_RATE = 0.05
"""Seconds of regex time one tunnel's rules earn a second: a twentieth of the event loop (an
ordinary path or header regex takes tens of microseconds, so thousands of requests a second)."""
TUNNEL_BURST = 0.1
"""Seconds one tunnel's rules may hold at once: a few stopped searches, thousands of ordinary ones."""
TOKEN_RATE = 0.15
"""Seconds of regex time all the tunnels of one token earn a second together (a holder of one
token may hold many names: 32 by default, each with its own share)."""
TOKEN_BURST = 0.25
"""Seconds all the tunnels of one token may hold at once."""


class TimeShare:
    """A token bucket of seconds: ``rate`` earned a second, at most ``burst`` held.

    Spending more than is held leaves a debt, paid back before anything runs again.

    Args:
        rate: seconds earned per second.
        burst: seconds held at most (and at first).
        owner: whose share, for messages (``this tunnel's rules``: "... used up their share").
    """

    __slots__ = ("rate", "burst", "owner", "_level", "_at")

    def __init__(self, rate: float, burst: float, owner: str) -> None:
        if not rate > 0 or not burst > 0:
            raise ValueError(f"a time share needs a rate and a burst above 0, not {rate!r} and {burst!r}")
        self.rate = rate
        self.burst = burst
        self.owner = owner
        self._level = burst
        self._at: float | None = None

    def level(self, now: float) -> float:
        """Seconds held at ``now`` (below 0: a debt)."""
        at = self._at
        if at is None or now > at:
            if at is not None:
                self._level = min(self.burst, self._level + (now - at) * self.rate)
            self._at = now
        return self._level

    def spend(self, seconds: float, now: float) -> None:
        """Take ``seconds`` at ``now``."""
        self._level = self.level(now) - max(0.0, seconds)

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until something is held again (0: now)."""
        level = self.level(now)
        return 0.0 if level > 0 else -level / self.rate


class RegexMeter:
    """One tunnel's regex time, drawn from its shares (its own, its token's).

    Args:
        shares: the buckets every search draws on; all must hold time for one to run.
        clock: monotonic seconds (a seam for tests).
    """

    __slots__ = ("shares", "clock", "runs", "refused", "_told_at", "_untold")

    def __init__(self, shares: Sequence[TimeShare], clock: Callable[[], float] = time.monotonic) -> None:
        self.shares = tuple(shares)
        self.clock = clock
        self.runs = 0
        """Matches with a regex that ran."""
        self.refused = 0
        """Matches with a regex not run, a share being spent."""
        self._told_at: float | None = None
        self._untold = 0

    def run(self, flt: Filter, exchange: Exchange) -> bool | None:
        """Whether ``flt`` matches ``exchange``; None, without running it, while a share is spent.

        It runs within the time its shares hold (and the current ``regex_budget``), and the time
        it took is taken from them, whatever its outcome.

        Raises:
            FilterTimeoutError: the search was stopped for time.
        """
        start = self.clock()
        left = min(share.level(start) for share in self.shares)
        if left <= 0:
            self.refused += 1
            self._untold += 1
            return None
        self.runs += 1
        try:
            with regex_budget(left):
                return flt(exchange)
        finally:
            end = self.clock()
            for share in self.shares:
                share.spend(end - start, end)

    def spent(self) -> tuple[TimeShare, float]:
        """The share that keeps searches from running now, and the seconds until all hold time."""
        now = self.clock()
        waits = [(share.wait(now), share) for share in self.shares]
        wait, share = max(waits, key=lambda pair: pair[0])
        return share, wait

    def tell(self, interval: float) -> int:
        """How many refusals to report now (0: one was reported less than ``interval`` ago):
        a log line at most once an interval, counting those since the last."""
        now = self.clock()
        if self._untold == 0 or (self._told_at is not None and now - self._told_at < interval):
            return 0
        count, self._untold, self._told_at = self._untold, 0, now
        return count


def token_share() -> TimeShare:
    """The share all the tunnels of one token draw on together."""
    return TimeShare(TOKEN_RATE, TOKEN_BURST, "the rules of all the tunnels of its token")


def tunnel_meter(token: TimeShare, clock: Callable[[], float] = time.monotonic) -> RegexMeter:
    """A meter for one tunnel: a share of its own, and its token's (``token_share``)."""
    return RegexMeter((TimeShare(TUNNEL_RATE, TUNNEL_BURST, "this tunnel's rules"), token), clock)
