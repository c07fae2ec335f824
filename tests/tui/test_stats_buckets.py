"""The stats strip's status buckets add up to the rows shown: a 502 that ended in an error counted
in both ``5xx`` and ``err``, a WebSocket's 101 and a request not answered yet in none."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.tui.widgets import StatsStrip
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import fill, inspector, make_exchange, utc


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


@pytest.mark.parametrize(("expression", "mix"), [
    ("", {"1xx": 1, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 1, "errors": 2, "pending": 1}),
    ("tunnel:hooks", {"1xx": 1, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "errors": 1, "pending": 0}),
])
async def test_each_request_shown_is_in_one_bucket(tmp_path: Path, expression: str, mix: dict[str, int]) -> None:
    db = fill(tmp_path / "captures.db", [
        make_exchange(0, status=200),
        make_exchange(1, status=200),
        make_exchange(2, status=404),
        make_exchange(3, status=500),
        make_exchange(4, status=502, error="local_refused", tunnel="hooks"),  # answered by the agent: an error
        make_exchange(5, status=None, error="local_refused"),
        make_exchange(6, status=101, tunnel="hooks"),  # a WebSocket
        make_exchange(7, status=None, duration=None),  # not answered yet
    ])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(140, 30)) as pilot:
        stats = app.query_one(StatsStrip)
        if expression:
            await pilot.press("slash", *expression, "enter")
            await async_wait_for(lambda: app.live.expression == expression and stats.shown == 2, what="the filter")
        await async_wait_for(lambda: stats.status_mix == mix, what=f"the buckets {mix}")
        assert sum(stats.status_mix.values()) == stats.shown
        line = str(stats.render())
        assert ("1xx 1  2xx 2  3xx 0  4xx 1  5xx 1  err 2  open 1" if not expression
                else "1xx 1  2xx 0  3xx 0  4xx 0  5xx 0  err 1") in line, line
        assert expression == "" or "open" not in line
