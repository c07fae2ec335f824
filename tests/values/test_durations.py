"""Durations as people write them (``hold = "30s"``): parsed, bounded, and written back the same."""

from __future__ import annotations

import pytest

from devtunnel.values.durations import format_duration, parse_duration
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


@pytest.mark.parametrize(("path", "ok"), [
    ("/healthz", True), ("/ready?full=1", True), ("/", True), ("healthz", False), ("/a b", False),
    ("/a\r\nX: y", False), ("/é", False), ("/" + "a" * 2048, False), ("", False),
])
def test_health_paths(path: str, ok: bool) -> None:
    assert (health_path_problem(path) is None) == ok
