"""values/exchange_ids: short ids are prefixes that name exactly one exchange."""

from __future__ import annotations

import random

import pytest

from devtunnel.values import exchange_ids
from devtunnel.capture.model import new_id
from devtunnel.values.exchange_ids import MIN_SHORT, STABLE_SHORT, shared_prefix, short_ids, stable_short_id


def _neighbours(ids: list[str]) -> list[tuple[str, str | None, str | None]]:
    ordered = sorted(ids)
    return [(i, ordered[n - 1] if n else None, ordered[n + 1] if n + 1 < len(ordered) else None)
            for n, i in enumerate(ordered)]


@pytest.fixture(autouse=True)
def _own_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids made here at chosen times; restored after, so later ids go back to the real clock."""
    monkeypatch.setattr(exchange_ids, "_last_id", (0, 0))


def test_each_short_id_is_the_shortest_prefix_no_other_id_shares() -> None:
    rng = random.Random(7)
    base = 1_800_000_000.0
    # Bursts in one millisecond, requests a few ms apart, and some seconds apart.
    ids = [new_id(base + rng.choice([0, 0, 0, 0.003, 0.25, 1.5, 90]) + k * 100) for k in range(20) for _ in range(8)]
    short = short_ids(_neighbours(ids))
    for exchange_id, prefix in short.items():
        assert exchange_id.startswith(prefix) and len(prefix) >= MIN_SHORT
        assert [other for other in ids if other.startswith(prefix)] == [exchange_id]
        if len(prefix) > MIN_SHORT:  # one character less would name another exchange too
            assert sum(other.startswith(prefix[:-1]) for other in ids) > 1


def test_a_lone_id_gets_the_minimum_and_the_stable_form_is_fixed() -> None:
    only = new_id(1_900_000_000.0)
    assert short_ids([(only, None, None)]) == {only: only[:MIN_SHORT]}
    assert stable_short_id(only) == only[:STABLE_SHORT]
    assert shared_prefix("01ABC", "01ABD") == 4 and shared_prefix("", "01") == 0


def test_time_prefix_begins_every_id_of_its_millisecond_and_id_time_reads_it_back() -> None:
    import time

    from devtunnel.values.exchange_ids import TIME_CHARS, id_time, time_prefix

    later = time.time() + 10_000  # after every id this process made: new_id does not move it
    made = new_id(later)
    assert time_prefix(later) == made[:TIME_CHARS]
    assert time_prefix(later - 0.001) < made < time_prefix(later + 0.001)
    assert id_time(made) == int(later * 1000) / 1000
    assert time_prefix(0) == "0" * TIME_CHARS and id_time("0" * 26) == 0.0
    assert time_prefix(-5) == "0" * TIME_CHARS  # before the epoch: the lowest prefix
    assert id_time("short") is None and id_time("01M8V2JDA!") is None and id_time("01m8v2jda0") is None
