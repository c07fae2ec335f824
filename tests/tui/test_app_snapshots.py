"""SVG snapshots of the inspector: traffic, a filter error, help, and every screen at 80x24.

Everything shown is frozen: fixed exchanges (ids, times), UTC, tunnels set by the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from textual.widgets import Input

from devtunnel.capture.model import Headers
from devtunnel.tui.backend import TunnelView
from devtunnel.tui.supervisor import AgentStatus
from devtunnel.tui.widgets import RequestTable, StatsStrip, TunnelsPanel
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import HOSTILE_PATH, cursor_in_view, fill, fixed_id, inspector, make_exchange, traffic, utc
from tests.tui.screen_fixtures import STRIPE_SIGNATURE, stripe_exchange


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


def _app(tmp_path: Path):  # type: ignore[no-untyped-def]
    exchanges = traffic(30)
    exchanges[7] = make_exchange(7, method="POST", target=HOSTILE_PATH, status=400)
    exchanges[20] = make_exchange(20, target="/api/orders?page=2", status=200, replay_of=exchanges[2].id)
    return inspector(fill(tmp_path / "captures.db", exchanges), tmp_path)


def _stripe_app(tmp_path: Path):  # type: ignore[no-untyped-def]
    """30 requests, then two Stripe deliveries (the second signed again, with another amount)."""
    first = stripe_exchange()
    again = stripe_exchange()
    again = replace(again, id=fixed_id(31), started_at=again.started_at + 60, request=replace(
        again.request,
        headers=Headers([(n, STRIPE_SIGNATURE[::-1] if n == "Stripe-Signature" else v) for n, v in again.request.headers.items()]),
        body=again.request.body.replace(b"2000", b"2500"),
    ))
    first = replace(first, id=fixed_id(30), started_at=first.started_at + 30)
    return inspector(fill(tmp_path / "captures.db", [*traffic(30), first, again]), tmp_path)


async def _settle(pilot, *, tunnels: bool = True, count: int = 30) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    table = app.query_one(RequestTable)
    await async_wait_for(lambda: len(table.ids) == count, what="ids")
    await async_wait_for(lambda: sum(app.query_one(StatsStrip).status_mix.values()) == count, what="status mix")
    if tunnels:
        panel = app.query_one(TunnelsPanel)
        panel.set_agent(AgentStatus("running", pid=1, api_url="http://127.0.0.1:4040", restarts=1))
        panel.update_tunnels([
            TunnelView("shop", "http://shop.localhost:8000", "http://127.0.0.1:3000", "online", requests=20),
            TunnelView("hooks", "http://hooks.localhost:8000", "http://127.0.0.1:5000", "failed",
                       error="name taken by another token", requests=10),
        ])
    await async_wait_for(lambda: all(table.cached_row(i) for i in table.ids[-20:]), what="rows")
    await async_wait_for(lambda: cursor_in_view(table), what="the table scrolled to its cursor")
    await pilot.pause()


def test_main_screen_with_traffic(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.press("up", "up", "m", "up")

    assert snap_compare(_app(tmp_path), terminal_size=(110, 32), run_before=run_before)


def test_filter_error_shown_inline_under_the_input(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot, tunnels=False)
        await pilot.press("slash")
        # Put in at once, as a paste: typed key by key, a machine under load let the bar's debounce
        # apply a valid prefix on the way ("0 shown" in the screenshot), which typing cannot fix.
        pilot.app.query_one("#filter-input", Input).insert_text_at_cursor("method:POST status:>=abc")
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


async def _open(pilot, screen: str, *keys: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.press(*keys)
    await async_wait_for(lambda: type(pilot.app.screen).__name__ == screen, what=screen)
    await pilot.pause()


def test_detail_of_a_stripe_webhook_at_80x24(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot, tunnels=False, count=32)
        await _open(pilot, "DetailScreen", "up", "enter")

    assert snap_compare(_stripe_app(tmp_path), terminal_size=(80, 24), run_before=run_before)


def test_raw_body_folded_at_80x24(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot, tunnels=False, count=32)
        await _open(pilot, "DetailScreen", "enter")
        await pilot.press("p")
        await pilot.pause()

    assert snap_compare(_stripe_app(tmp_path), terminal_size=(80, 24), run_before=run_before)


def test_diff_of_two_stripe_deliveries_at_80x24(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot, tunnels=False, count=32)
        await _open(pilot, "DiffScreen", "m", "up", "d")
        await async_wait_for(lambda: pilot.app.screen.result is not None, what="the diff")
        await pilot.pause()

    assert snap_compare(_stripe_app(tmp_path), terminal_size=(80, 24), run_before=run_before)


def test_help_at_80x24(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot, tunnels=False)
        await _open(pilot, "HelpScreen", "question_mark")

    assert snap_compare(_app(tmp_path), terminal_size=(80, 24), run_before=run_before)


def test_new_tunnel_at_80x24(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        from devtunnel.tui.screens.new_tunnel import NewTunnelScreen

        await _settle(pilot)
        await pilot.app.push_screen(NewTunnelScreen())  # "n" needs a running agent
        await _open(pilot, "NewTunnelScreen")
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False  # a steady cursor: on a loaded machine the shot can land in either phase
        await pilot.pause()

    assert snap_compare(_app(tmp_path), terminal_size=(80, 24), run_before=run_before)
