"""Short exchange ids: prefixes of the 26-character ULID that people can read, type and paste.

An exchange id is a ULID: 10 characters of millisecond timestamp, then 16 of random part
(``new_id`` makes them). Any unique prefix names an exchange (``devtunnel show 01JD3X4K``), as
with git commits.

Two forms are printed:

- :func:`short_ids`, the shortest prefix that is unique among the stored ids (never fewer than
  ``MIN_SHORT`` characters), for lists of stored exchanges (``devtunnel requests``). Like git's
  abbreviations, it can grow longer later, when an exchange made in the same second arrives.
- :func:`stable_short_id`, a fixed ``STABLE_SHORT``-character prefix, for text written before
  the future is known (the log line of a request that just finished, a screen header). The
  timestamp alone (10 characters) is not enough: exchanges begun in the same millisecond share
  it. ``new_id`` steps the next 3 characters for every id it makes in one
  millisecond, so the ids one process makes always differ within ``STABLE_SHORT`` characters;
  ids made by two processes in the same millisecond share it once in 32,768.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterable
from typing import Final

__all__ = ["MIN_SHORT", "STABLE_SHORT", "TIME_CHARS", "id_time", "new_id", "stable_short_id", "shared_prefix", "short_ids",
           "time_prefix"]

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


_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DIGIT_PAIRS: Final = [_CROCKFORD[i >> 5] + _CROCKFORD[i & 31] for i in range(1024)]
"""Two Crockford digits for every 10-bit number: 13 lookups make the 26 digits of a ULID."""
_id_lock = threading.Lock()
_last_id: tuple[int, int] = (0, 0)
_time_head: tuple[int, str] = (-1, "")
"""``ms >> 10`` of the last id made and the first 8 digits it gives every id of those 1,024 ms:
they change about once a second, so most ids look up 9 pairs of digits instead of 13."""
_rng = random.Random(os.urandom(32))
# A forked child must not draw the same random parts as its parent.
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


_STEP_SHIFT: Final = 65
"""Ids of one millisecond step the random part's top 15 bits (its first 3 characters, so the
first 13 of the id differ: ``STABLE_SHORT``) and draw the 65 below afresh."""


def new_id(now: float | None = None) -> str:
    """A 26-character ULID: sortable by creation time, unique, monotonic within a process.

    Ids made in the same millisecond by one process differ within their first 13 characters
    (the ULID spec's "add 1" would make them differ only in the last one, so no short prefix
    could tell them apart).

    Args:
        now: seconds since the epoch (defaults to ``time.time()``); tests pass a frozen clock.
    """
    global _last_id, _time_head
    ms = int((time.time() if now is None else now) * 1000)
    with _id_lock:
        last_ms, last_rand = _last_id
        if ms <= last_ms:
            # The same millisecond, or the clock stepped back: keep the order of creation.
            ms = last_ms
            rand = ((last_rand >> _STEP_SHIFT) + 1) << _STEP_SHIFT | _rng.getrandbits(_STEP_SHIFT)
            if rand >> 80:  # 16,384 ids or more in one millisecond: go on in the next one
                ms, rand = ms + 1, _rng.getrandbits(79)
        else:
            # Seeded from the OS once per process: ids need to be unique, not secret. 79 bits
            # leave room for at least 2**14 steps before the 80-bit part would overflow.
            rand = _rng.getrandbits(79)
        _last_id = (ms, rand)
    # The 26 digits: 2 zero bits and the 48-bit time (10 digits), then the 80 random bits in
    # two halves of 40 (8 digits each). Small ints shift faster than the 128-bit whole.
    d = _DIGIT_PAIRS
    thousand = ms >> 10
    cached, head = _time_head
    if cached != thousand:
        head = d[(ms >> 40) & 1023] + d[(ms >> 30) & 1023] + d[(ms >> 20) & 1023] + d[thousand & 1023]
        _time_head = (thousand, head)
    hi, lo = (rand >> 40) & 0xFFFFFFFFFF, rand & 0xFFFFFFFFFF
    return "".join((
        head, d[ms & 1023],
        d[hi >> 30], d[(hi >> 20) & 1023], d[(hi >> 10) & 1023], d[hi & 1023],
        d[lo >> 30], d[(lo >> 20) & 1023], d[(lo >> 10) & 1023], d[lo & 1023],
    ))


def time_prefix(seconds: float) -> str:
    """The ``TIME_CHARS`` characters that begin every id made in the millisecond of ``seconds``
    (since the epoch): ids made then or later sort after it, ids made before sort before it.
    Unlike ``new_id(seconds)[:TIME_CHARS]``, it does not move up to the last id this process made."""
    ms = min(max(0, int(seconds * 1000)), (1 << 48) - 1)
    d = _DIGIT_PAIRS
    return "".join((d[(ms >> 40) & 1023], d[(ms >> 30) & 1023], d[(ms >> 20) & 1023], d[(ms >> 10) & 1023],
                    d[ms & 1023]))


def id_time(exchange_id: str) -> float | None:
    """The second (since the epoch, to the millisecond) an id was made at; None for a string
    that does not begin with ``TIME_CHARS`` Crockford digits."""
    prefix = exchange_id[:TIME_CHARS]
    if len(prefix) < TIME_CHARS:
        return None
    ms = 0
    for ch in prefix:
        digit = _CROCKFORD.find(ch)
        if digit < 0:
            return None
        ms = ms * 32 + digit
    return ms / 1000
