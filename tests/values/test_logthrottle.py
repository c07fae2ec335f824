"""The log rate limiter: first line of a kind written, the rest counted and summarised."""

from __future__ import annotations

import pytest

from devtunnel.values.logthrottle import LogThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_occurrence_is_written_and_the_rest_counted_until_the_interval_ends() -> None:
    clock = Clock()
    throttle = LogThrottle(10.0, clock)
    assert throttle.admit("invalid-http")
    assert [throttle.admit("invalid-http") for _ in range(499)] == [False] * 499
    assert throttle.summaries() == []  # not due yet
    assert throttle.next_due() == 110.0
    clock.now = 110.0
    assert throttle.summaries() == [("invalid-http", 499)]
    assert throttle.summaries() == []  # handed out once


def test_kinds_are_limited_separately() -> None:
    throttle = LogThrottle(10.0, Clock())
    assert throttle.admit("invalid-http")
    assert throttle.admit("invalid-utf8")
    assert not throttle.admit("invalid-http")
    assert not throttle.admit("invalid-utf8")


def test_a_steady_flood_gives_one_summary_per_interval_and_no_more_full_lines() -> None:
    clock = Clock()
    throttle = LogThrottle(10.0, clock)
    written = summaries = 0
    for step in range(300):  # 30 s, ten occurrences a second
        clock.now = 100.0 + step / 10
        written += throttle.admit("flood")
        summaries += len(throttle.summaries())
    assert (written, summaries) == (1, 2)
    clock.now = 140.0
    assert throttle.summaries() == [("flood", 99)]  # 20.0 to 29.9 s
    assert throttle.next_due() is None


def test_after_a_quiet_interval_the_next_occurrence_is_written_again() -> None:
    clock = Clock()
    throttle = LogThrottle(10.0, clock)
    assert throttle.admit("k")
    clock.now = 110.0
    assert throttle.summaries() == []  # nothing counted: forgotten
    assert throttle.admit("k")
    clock.now = 111.0
    assert not throttle.admit("k")
    clock.now = 120.0
    assert throttle.summaries() == [("k", 1)]
    clock.now = 125.0  # still counted only: the summary started another interval
    assert not throttle.admit("k")
    clock.now = 130.0
    assert throttle.summaries() == [("k", 1)]
    clock.now = 140.0
    assert throttle.summaries() == []
    assert throttle.admit("k")


def test_drain_hands_out_every_count_due_or_not() -> None:
    throttle = LogThrottle(10.0, Clock())
    throttle.admit("a")
    throttle.admit("a")
    throttle.admit("b")
    assert throttle.drain() == [("a", 1)]
    assert throttle.admit("a")  # forgotten: written again


@pytest.mark.parametrize("interval", [0, -1, float("nan")])
def test_an_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        LogThrottle(interval)
