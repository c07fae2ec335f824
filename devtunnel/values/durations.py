"""Durations written by people: ``30s``, ``1.5m``, ``500ms``, ``2m30s``, or a number of seconds."""

from __future__ import annotations

import math
import re

from devtunnel.values.terminal import quoted

__all__ = ["format_duration", "human_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h)")
_LONGEST = 24 * 3600.0


def parse_duration(text: str | float, *, what: str = "duration") -> float:
    """Seconds in ``text``: ``30s``, ``500ms``, ``2m``, ``1m30s``, ``1h``, or a bare number of seconds.

    Zero is allowed (it turns the setting off); negative, infinite and above a day are not.

    Raises:
        ValueError: the text is not a duration (the message says what is expected).
    """
    hint = f"expected a {what} such as 30s, 500ms or 2m"
    if isinstance(text, bool):
        raise ValueError(f"{hint}, got a boolean")  # noqa: TRY004 - the settings' kinds raise ValueError
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        raw = text.strip().lower()
        try:
            seconds = float(raw)
        except ValueError:
            pos, seconds = 0, 0.0
            raw = raw.replace(" ", "")
            for match in _PART.finditer(raw):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if not raw or pos != len(raw):
                raise ValueError(f"{hint}, got {quoted(text)}") from None
    if math.isnan(seconds) or seconds < 0 or seconds > _LONGEST:
        raise ValueError(f"{hint} (0 to 24h), got {quoted(text)}")
    return seconds


def format_duration(seconds: float) -> str:
    """``30s``, ``1.5s``, ``2m``, ``1m30s``: the short form people write."""
    if seconds < 60 or seconds % 1:
        return f"{seconds:g}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"


def human_duration(seconds: float | None, missing: str = "-") -> str:
    """How long an exchange took, for people, in one style wherever it is shown (the table's DUR
    column, the detail, the CLI's listings, the log line): at most 7 cells.

    ``0.0123`` -> ``12.3 ms``, ``0.85`` -> ``850 ms``, ``5.023`` -> ``5.02 s``, ``12.34`` ->
    ``12.3 s``, ``125`` -> ``2m05s``, ``3725`` -> ``1h02m``; ``None`` (still in flight) -> ``missing``.
    """
    if seconds is None:
        return missing
    # ``%`` rather than an f-string's format specification: the same text, and compiled
    # (``devtunnel.native``) no ``str.format`` to parse its template on every request's log line.
    # Each step is chosen on the figure as rounded, so 99.96 ms reads 100 ms, not 100.0 ms.
    ms = seconds * 1000
    if round(ms, 1) < 100:
        return "%.1f ms" % ms
    if round(ms) < 1000:
        return "%d ms" % round(ms)
    if round(seconds, 2) < 10:
        return "%.2f s" % seconds
    if round(seconds, 1) < 60:
        return "%.1f s" % seconds
    whole = round(seconds)
    if whole < 3600:
        return "%dm%02ds" % (whole // 60, whole % 60)
    return "%dh%02dm" % (whole // 3600, whole % 3600 // 60)
