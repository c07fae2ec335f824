"""Short exchange ids: prefixes of the 26-character ULID that people can read, type and paste.

An exchange id is a ULID: 10 characters of millisecond timestamp, then 16 of random part.
Any unique prefix names an exchange (``devtunnel show 01JD3X4K``), as with git commits.

Two forms are printed:

- :func:`short_ids`, the shortest prefix that is unique among the stored ids (never fewer than
  ``MIN_SHORT`` characters), for lists of stored exchanges (``devtunnel requests``). Like git's
  abbreviations, it can grow longer later, when an exchange made in the same second arrives.
- :func:`stable_short_id`, a fixed ``STABLE_SHORT``-character prefix, for text written before
  the future is known (the log line of a request that just finished, a screen header). The
  timestamp alone (10 characters) is not enough: exchanges begun in the same millisecond share
  it. ``capture.model.new_id`` steps the next 3 characters for every id it makes in one
  millisecond, so the ids one process makes always differ within ``STABLE_SHORT`` characters;
  ids made by two processes in the same millisecond share it once in 32,768.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MIN_SHORT", "STABLE_SHORT", "TIME_CHARS", "stable_short_id", "shared_prefix", "short_ids"]

TIME_CHARS = 10
"""Characters of a ULID that spell its millisecond."""

STABLE_SHORT = 13
"""Characters of a ULID within which ids one process makes always differ (the millisecond and
the 3 characters ``new_id`` steps within a millisecond)."""

MIN_SHORT = 8
"""The fewest characters a short id has (8 characters of timestamp name a second or so)."""


def stable_short_id(exchange_id: str) -> str:
    """The fixed-length short form of ``exchange_id``: unique whatever ids come later, in practice."""
    return exchange_id[:STABLE_SHORT]


def shared_prefix(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def short_ids(neighbours: Iterable[tuple[str, str | None, str | None]], minimum: int = MIN_SHORT) -> dict[str, str]:
    """The shortest unique prefix of each id, given the ids just before and after it in sort order.

    Args:
        neighbours: ``(id, previous, next)`` for each id to shorten, where ``previous`` and
            ``next`` are the stored ids that sort right before and after it (None at an end).
            In a sorted set, an id's longest common prefix with any other id is the one it has
            with one of these two.
        minimum: the fewest characters to give.

    Returns:
        id -> its short form.
    """
    out: dict[str, str] = {}
    for exchange_id, before, after in neighbours:
        shared = max(shared_prefix(exchange_id, other) for other in (before or "", after or ""))
        out[exchange_id] = exchange_id[: max(minimum, shared + 1)]
    return out
