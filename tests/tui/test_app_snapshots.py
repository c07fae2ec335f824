"""SVG snapshots of the inspector: traffic, a filter error, help, and the 80x24 layout.

Everything shown is frozen: fixed exchanges (ids, times), UTC, tunnels set by the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.tui.backend import TunnelView
from devtunnel.tui.supervisor import AgentStatus
from devtunnel.tui.widgets import RequestTable, StatsStrip, TunnelsPanel
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import HOSTILE_PATH, fill, inspector, make_exchange, traffic, utc


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


def _app(tmp_path: Path):  # type: ignore[no-untyped-def]
    exchanges = traffic(30)
    exchanges[7] = make_exchange(7, method="POST", target=HOSTILE_PATH, status=400)
    exchanges[20] = make_exchange(20, target="/api/orders?page=2", status=200, replay_of=exchanges[2].id)
    return inspector(fill(tmp_path / "captures.db", exchanges), tmp_path)


async def _settle(pilot, *, tunnels: bool = True) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    table = app.query_one(RequestTable)
    await async_wait_for(lambda: len(table.ids) == 30, what="ids")
    await async_wait_for(lambda: sum(app.query_one(StatsStrip).status_mix.values()) == 30, what="status mix")
    if tunnels:
        panel = app.query_one(TunnelsPanel)
        panel.set_agent(AgentStatus("running", pid=1, api_url="http://127.0.0.1:4040", restarts=1))
        panel.update_tunnels([
            TunnelView("shop", "http://shop.localhost:8000", "http://127.0.0.1:3000", "online", requests=20),
            TunnelView("hooks", "http://hooks.localhost:8000", "http://127.0.0.1:5000", "failed",
                       error="name taken by another token", requests=10),
        ])
    await async_wait_for(lambda: all(table.cached_row(i) for i in table.ids[-20:]), what="rows")
    await pilot.pause()


def test_main_screen_with_traffic(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("up", "up", "m", "up")

    assert snap_compare(_app(tmp_path), terminal_size=(110, 32), run_before=run_before)


def test_filter_error_shown_inline_under_the_input(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot, tunnels=False)
        await pilot.press("slash", *"method:POST status:>=abc")
        await async_wait_for(lambda: pilot.app.query_one("#filter-error").display, what="the error")
        await pilot.pause()

    assert snap_compare(_app(tmp_path), terminal_size=(100, 24), run_before=run_before)


def test_help_screen(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot, tunnels=False)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(_app(tmp_path), terminal_size=(100, 40), run_before=run_before)


def test_layout_at_80x24(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)

    assert snap_compare(_app(tmp_path), terminal_size=(80, 24), run_before=run_before)
