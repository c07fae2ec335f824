"""The request table's columns follow its rows: TUNNEL when they are of several tunnels, EVENT
when webhooks are among them, and PATH keeps its room at 80 columns."""

from __future__ import annotations

from pathlib import Path

from devtunnel.tui.widgets.request_table import RequestTable
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import fill, inspector, make_exchange, screen_lines

PATH = "/api/v1/orders/12345/items"  # 26 cells


async def _lines(tmp_path: Path, tunnels: list[str], size: tuple[int, int]) -> list[str]:
    db = fill(tmp_path / "captures.db", [make_exchange(n, target=PATH, tunnel=tunnels[n % len(tunnels)])
                                         for n in range(6)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=size) as pilot:
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: table.total == 6 and all(table.row_at(i) for i in range(6)), what="the rows")
        await pilot.pause()
        return screen_lines(table)


async def test_at_80_columns_rows_of_several_tunnels_name_them_and_keep_the_path_whole(tmp_path: Path) -> None:
    lines = await _lines(tmp_path, ["payments-service-long", "web"], (80, 24))
    assert "TUNNEL" in lines[0] and "EVENT" not in lines[0]
    assert f"payments-… GET     {PATH}" in lines[1]
    assert f"web        GET     {PATH}" in lines[2]
    assert all(len(line) <= 80 for line in lines)


async def test_at_80_columns_one_tunnel_gives_its_cells_to_the_path(tmp_path: Path) -> None:
    long_path = PATH + "?expand=true&page=2"  # 45 cells
    db = fill(tmp_path / "captures.db", [make_exchange(n, target=long_path) for n in range(3)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: table.total == 3 and all(table.row_at(i) for i in range(3)), what="the rows")
        await pilot.pause()
        lines = screen_lines(table)
    assert "TUNNEL" not in lines[0] and "EVENT" not in lines[0]
    assert f"GET     {long_path[:37]}…" in lines[1]


async def test_a_wide_table_shows_a_long_tunnel_name_whole(tmp_path: Path) -> None:
    lines = await _lines(tmp_path, ["payments-service-long", "web"], (200, 24))
    assert f"payments-service-long GET     {PATH}" in lines[1]
