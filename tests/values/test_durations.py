"""Durations as people write them (``hold = "30s"``): parsed, bounded, and written back the same."""

from __future__ import annotations

import pytest

from devtunnel.values.durations import format_duration, human_duration, parse_duration
from devtunnel.values.health_path import health_path_problem


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1m30s", 90.0), ("1h", 3600.0), (" 10 ", 10.0),
    ("1.5s", 1.5), ("2 min", 120.0), ("0", 0.0), (45, 45.0), (0.25, 0.25), ("24h", 86400.0),
])
def test_parse(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "soon", "30x", "-1", "-3s", "1e400", "nan", "inf", "25h", "30s30", True])
def test_bad_durations_say_what_is_expected(text: object) -> None:
    with pytest.raises(ValueError, match="expected a hold such as 30s"):
        parse_duration(text, what="hold")  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [0.5, 1.0, 30.0, 59.0, 60.0, 90.0, 120.0, 3600.0, 1.25])
def test_format_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(("seconds", "shown"), [
    (None, "-"), (0.0, "0.0 ms"), (0.0123, "12.3 ms"), (0.0999, "99.9 ms"), (0.09996, "100 ms"), (0.85, "850 ms"),
    (0.9996, "1.00 s"), (5.023, "5.02 s"), (9.996, "10.0 s"), (12.34, "12.3 s"), (59.96, "1m00s"), (125, "2m05s"),
    (3725, "1h02m"),
])
def test_one_style_of_duration_for_the_table_the_detail_and_the_cli(seconds: float | None, shown: str) -> None:
    """The detail said ``5,023 ms``, the table ``5.02s`` and the CLI ``5.02 s`` for one request:
    one function now, whose text fits the table's DUR column (7 cells) at every step."""
    assert human_duration(seconds) == shown
    assert len(shown) <= 7


def test_a_duration_still_unknown_reads_as_the_caller_says() -> None:
    assert human_duration(None, "…") == "…"


@pytest.mark.parametrize(("path", "ok"), [
    ("/healthz", True), ("/ready?full=1", True), ("/", True), ("healthz", False), ("/a b", False),
    ("/a\r\nX: y", False), ("/é", False), ("/" + "a" * 2048, False), ("", False),
])
def test_health_paths(path: str, ok: bool) -> None:
    assert (health_path_problem(path) is None) == ok
