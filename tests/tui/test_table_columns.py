"""The request table's columns follow its rows: TUNNEL when they are of several tunnels, EVENT
when webhooks are among them, PATH keeps its room at 80 columns and takes no more than its
paths need on a wide table."""

from __future__ import annotations

from pathlib import Path

from devtunnel.tui.widgets.request_table import RequestTable
from devtunnel.tui.widgets.table_rows import Columns
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


async def test_at_200_columns_path_takes_what_its_paths_need_and_the_other_columns_stay_near(tmp_path: Path) -> None:
    """At 200 columns PATH took 135 cells, most of them blank: a request's status, duration and
    size were read a screen's width away from its path."""
    lines = await _lines(tmp_path, ["payments-service-long", "web"], (200, 24))
    header = lines[0]
    assert header.index("ST") - header.index("PATH") == Columns.PATH_CAP + 4  # PATH, then the marks cell
    assert f"web                   GET     {PATH}" in lines[2]
    assert lines[2].rstrip().endswith(" 42.0 ms    512B")  # DUR and SIZE a little wider each
    assert len(lines[2].rstrip()) == 130  # and 70 blank cells after: no longer between path and status


async def test_a_wide_table_shows_a_long_path_whole(tmp_path: Path) -> None:
    long_path = "/oauth/callback?code=" + "x" * 90 + "&state=abc"  # 111 cells
    db = fill(tmp_path / "captures.db", [make_exchange(0, target=PATH), make_exchange(1, target=long_path)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(200, 24)) as pilot:
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: table.total == 2 and all(table.row_at(i) for i in range(2)), what="the rows")
        await pilot.pause()
        lines = screen_lines(table)
    assert f"{long_path} " in lines[2] and "…" not in lines[2]
    assert lines[0].index("ST") - lines[0].index("PATH") == len(long_path) + 4


def test_columns_of_a_wide_table_give_path_its_longest_path_and_the_rest_to_event_dur_and_size() -> None:
    short = Columns.for_width(200, tunnel_cells=21, webhooks=False, path_cells=20)
    assert (short.path, short.tunnel, short.duration, short.size) == (Columns.PATH_CAP, 21, 9, 7)
    assert short.used < 200
    hooks = Columns.for_width(200, tunnel_cells=21, webhooks=True, path_cells=20)
    assert hooks.event == Columns.EVENT_ROOMY and hooks.path == Columns.PATH_CAP
    long = Columns.for_width(200, tunnel_cells=21, webhooks=False, path_cells=120)
    assert long.path == 120 and long.used < 200
    # Wider than the room: PATH takes the rest, as without knowing its paths.
    assert Columns.for_width(200, path_cells=500) == Columns.for_width(200)
    # At 80 and 120 columns nothing changes: PATH has less than its cap there.
    for width in (80, 118):
        assert Columns.for_width(width, path_cells=20) == Columns.for_width(width)
        assert Columns.for_width(width).used == width
