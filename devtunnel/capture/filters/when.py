"""The time filters: ``since:`` and ``until:``, on when an exchange began.

A value is a duration back from now (``since:10m``: the last ten minutes; units s, m, h, d), a
clock time today (``since:14:05``, ``until:14:30:15``), a date (``since:2026-12-05``: from its
midnight) or a date and time (``since:2026-12-05T14:05``, ``Z`` or ``+01:00`` for another zone).
Times without a zone are the machine's local time, as the inspector shows them. "Now" and
"today" are fixed when the filter is parsed: a filter the inspector keeps applied does not slide.
``since`` keeps an exchange that began at the instant or later, ``until`` one that began before it.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import ClassVar

from devtunnel.capture.filters.base import Leaf, SqlParams, sql_number
from devtunnel.capture.model import Exchange
from devtunnel.errors import FilterSyntaxError

__all__ = ["Since", "Until", "build_since", "build_until", "instant"]

_AGO = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)", re.IGNORECASE)
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def instant(text: str, now: float | None = None) -> float | None:
    """Seconds since the epoch that ``text`` names (see the module), or None if it names none.

    Args:
        text: ``10m``, ``14:05``, ``2026-12-05``, ``2026-12-05T14:05:00+01:00`` ...
        now: the present (defaults to ``time.time()``), for durations and "today".
    """
    now = time.time() if now is None else now
    if m := _AGO.fullmatch(text):
        return now - float(m.group(1)) * _UNITS[m.group(2).lower()]
    if m := _CLOCK.fullmatch(text):
        hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if hour > 23 or minute > 59 or second > 59:
            return None
        today = dt.datetime.fromtimestamp(now).date()
        return dt.datetime.combine(today, dt.time(hour, minute, second)).timestamp()
    if not text[:1].isdigit():
        return None
    try:
        # Naive: local time, as the inspector shows it. A date at the calendar's edge has no
        # local instant (0001-01-01 east of UTC is in year 0): ValueError or OverflowError.
        return dt.datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


class _When(Leaf):
    """Began at or after (``since``) / before (``until``) an instant."""

    op: ClassVar[str] = ""

    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self, ex: Exchange) -> bool:
        return ex.started_at >= self.at if self.op == ">=" else ex.started_at < self.at

    def sql(self) -> tuple[str, SqlParams]:
        return f"(e.started_at {self.op} ?)", [sql_number(self.at)]


class Since(_When):
    code = "since"
    syntax = "since:10m  since:14:05  since:2026-12-05"
    help = ("began in the last 10m (s, m, h, d), or at or after a local time today, a date or "
            "date and time (fixed when the filter is applied)")
    op = ">="


class Until(_When):
    code = "until"
    syntax = "until:1h  until:14:30  until:2026-12-05T09:00"
    help = "began before: more than 1h ago, or before a local time today, a date or date and time"
    op = "<"


def _at(cls: type[_When], value: str, pos: int) -> float:
    at = instant(value)
    if at is None:
        raise FilterSyntaxError(
            f"{cls.code} expects a duration like 10m or 2h, a time like 14:05, or a date like 2026-12-05", pos)
    return at


def build_since(value: str, pos: int) -> Since:
    """``since:VALUE`` (``pos``: where the value starts, for the error)."""
    return Since(_at(Since, value, pos))


def build_until(value: str, pos: int) -> Until:
    """``until:VALUE``."""
    return Until(_at(Until, value, pos))
