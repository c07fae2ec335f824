"""SVG snapshots of requests held for the app devtunnel runs (``--hold``): ``HLD`` on the table
beside a slow request's ``…``, and the wait in a delivered request's Timing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from devtunnel.capture.model import Exchange
from devtunnel.tui.widgets import RequestTable, StatsStrip
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import cursor_in_view, fill, inspector, make_exchange, traffic, utc


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


def _held_traffic() -> list[Exchange]:
    """Ten requests, then: one delivered after 3.2 s held, one the app is slow to answer, and two
    still held while the app restarts."""
    return [
        *traffic(10),
        replace(make_exchange(10, method="POST", target="/webhooks/stripe", status=200, duration=3.25), held=3.2),
        make_exchange(11, target="/api/reports", status=None, duration=None),
        replace(make_exchange(12, method="POST", target="/webhooks/stripe", status=None, duration=None),
                held=2.0, holding=True),
        replace(make_exchange(13, target="/api/orders", status=None, duration=None), held=1.0, holding=True),
    ]


async def _settle(pilot) -> None:  # type: ignore[no-untyped-def]
    table = pilot.app.query_one(RequestTable)
    await async_wait_for(lambda: len(table.ids) == 14, what="ids")
    await async_wait_for(lambda: all(table.cached_row(i) for i in table.ids), what="rows")
    await async_wait_for(lambda: cursor_in_view(table), what="the table scrolled to its cursor")
    stats = pilot.app.query_one(StatsStrip)
    await async_wait_for(lambda: stats.status_mix, what="the status mix counted")
    await pilot.pause()


def test_held_requests_on_the_table(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)

    app = inspector(fill(tmp_path / "captures.db", _held_traffic()), tmp_path)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_the_wait_of_a_held_request_in_its_timing(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("up", "up", "up", "enter")
        await async_wait_for(lambda: type(pilot.app.screen).__name__ == "DetailScreen", what="the detail")
        await pilot.press("3")
        await pilot.pause()

    app = inspector(fill(tmp_path / "captures.db", _held_traffic()), tmp_path)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
