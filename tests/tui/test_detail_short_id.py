"""The detail screen names its exchange by the short id the log line prints."""

from __future__ import annotations

from textual.widgets import Static

from devtunnel.tui.screens import DetailScreen
from devtunnel.values.exchange_ids import stable_short_id
from tests.tui.screen_fixtures import ScreenApp, json_exchange


async def test_the_detail_header_starts_with_the_short_id_show_and_replay_take() -> None:
    ex = json_exchange()
    app = ScreenApp(DetailScreen(ex))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        header = str(app.screen.query_one("#detail-title", Static).render())
        assert header.startswith(f"{stable_short_id(ex.id)}  {ex.request.method} ")
        assert ex.id not in header  # the short form, not all 26 characters
