"""The virtualised request table: literal rendering of hostile data, 100k rows, mouse, updates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.capture.store import Store
from devtunnel.tui.widgets.request_table import RequestTable
from devtunnel.tui.widgets.table_rows import printable
from devtunnel.values.sizes import compact_size
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import (HOSTILE_PATH, fill, fixed_id, inspector, line_text, make_exchange,
                                    screen_lines, traffic, utc)


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


async def _rows_shown(table: RequestTable) -> None:
    await async_wait_for(lambda: table.ids and all(table.cached_row(i) for i in table.ids[-3:]), what="rows")


def test_printable_escapes_every_control_character_visibly_as_the_cli_does() -> None:
    from devtunnel.commands.output import safe

    hostile = "a\x1b[31mb\x07c\x9bd\x7fe\u202ef\tg\r\n\u200bz"
    assert printable(hostile) == "a\\x1b[31mb\\x07c\\x9bd\\x7fe\\u202ef\\tg\\r\\n\\u200bz" == safe(hostile)
    assert printable("[bold]ünïcødé[/]") == "[bold]ünïcødé[/]"


def test_sizes_read_short() -> None:
    assert [compact_size(s) for s in (0, 900, 1536, 20 * 1024 * 1024)] == ["0B", "900B", "1.5K", "20M"]


async def test_hostile_paths_methods_and_tunnel_names_render_literally(tmp_path: Path) -> None:
    hostile = [
        make_exchange(0, target=HOSTILE_PATH),
        make_exchange(1, target="/[bold]x[/bold]", method="[b]GET", tunnel="t\x1b]0;title\x07"),
        make_exchange(2, target=b"/bin\xff\xfe\x00ary"),
        make_exchange(3, target="/pay\u200bment/\u2066x\u2069/\ufeff", tunnel="zero\u200dwidth"),
    ]
    db = fill(tmp_path / "captures.db", hostile)
    app = inspector(db, tmp_path)
    async with app.run_test(size=(200, 20)) as pilot:
        table = app.query_one(RequestTable)
        await _rows_shown(table)
        await pilot.pause()
        lines = screen_lines(table)
        assert "/a?x=[/y]&[bold]b[/bold]\\x1b[31mred\\x1b]52;c;SGVsbG8=\\x07\\x9b2J\\u202eevil" in lines[1]
        assert "[b]GET" in lines[2] and "/[bold]x[/bold]" in lines[2] and "t\\x1b]0;ti" in lines[2]
        assert "/bin\\xff\\xfe\\x00ary" in lines[3]  # bytes that are not UTF-8 (latin-1 read them as ÿþ)
        assert "/pay\\u200bment/\\u2066x\\u2069/\\ufeff" in lines[4] and "zero\\u200" in lines[4]
        assert not any(ch in "".join(lines) for ch in "\x1b\x07\x9b\x00\u202e\u200b\u200d\u2066\ufeff")
        # The segments carry the text as data: no style came from the captured text.
        for y in (1, 2):
            styles = {segment.style for segment in table.render_line(y) if "bold" in segment.text}
            assert all(style is None or not style.bold for style in styles)


async def test_a_hundred_thousand_rows_open_and_scroll_to_both_ends(tmp_path: Path) -> None:
    db = tmp_path / "captures.db"
    store = Store(db, max_exchanges=200_000)
    store.put_many(make_exchange(n, target=f"/items/{n}", status=200 + n % 4 * 100) for n in range(100_000))
    store.close()
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: len(table.ids) == 100_000, timeout=30, what="100k ids")
        await _rows_shown(table)
        # On screen, not only read: the table scrolls to the cursor after a refresh (call_after_refresh),
        # so each line drawn is waited for.
        await async_wait_for(lambda: "/items/99999" in screen_lines(table)[-1], what="the newest row on screen")
        await pilot.press("home")
        await async_wait_for(lambda: table.cached_row(fixed_id(0)), what="first rows")
        await async_wait_for(lambda: "/items/0 " in line_text(table, 1), what="the first row on screen")
        assert not table.following
        await pilot.press("pagedown", "pagedown")
        assert table.cursor == 2 * table._page
        await pilot.press("end")
        await async_wait_for(lambda: table.cached_row(fixed_id(99_999)), what="last rows")
        await async_wait_for(lambda: "/items/99999" in line_text(table, table.scrollable_content_region.height - 1),
                             what="the newest row on screen")
        assert table.following and table.current_id == fixed_id(99_999)
        assert len(table.window) <= table.WINDOW_ROWS


async def test_clicking_a_row_selects_it_and_double_click_opens_detail(tmp_path: Path) -> None:
    db = fill(tmp_path / "captures.db", traffic(12))
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(RequestTable)
        await _rows_shown(table)
        await pilot.click(RequestTable, offset=(20, 3))
        assert table.current_id == fixed_id(2) and not table.following
        await pilot.click(RequestTable, offset=(20, 3), times=2)
        await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="the detail screen")


async def test_enter_opens_the_detail_of_the_current_request(tmp_path: Path) -> None:
    db = fill(tmp_path / "captures.db", traffic(12))
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(RequestTable)
        await _rows_shown(table)
        await pilot.press("up", "enter")
        await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="the detail screen")
        assert app.screen.exchange.id == fixed_id(10)  # type: ignore[attr-defined]


async def test_updated_exchange_is_read_again_and_late_ids_are_inserted_in_order(tmp_path: Path) -> None:
    pending = make_exchange(5, target="/slow", status=None, duration=None)
    db = fill(tmp_path / "captures.db", [make_exchange(n, target=f"/p{n}") for n in (1, 3)] + [pending])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(RequestTable)
        await _rows_shown(table)
        await pilot.pause()
        assert "…" in screen_lines(table)[3]
        fill(db, [make_exchange(5, target="/slow", status=503, duration=2.5), make_exchange(2, target="/p2")])
        app.live.changed([fixed_id(5), fixed_id(2)])
        await async_wait_for(lambda: len(table.ids) == 4, what="the late id")
        await async_wait_for(lambda: (row := table.cached_row(fixed_id(5))) and row.status == 503, what="reread")
        await pilot.pause()
        lines = screen_lines(table)
        assert [line.split()[3] for line in lines[1:5]] == ["/p1", "/p2", "/p3", "/slow"]
        assert "503" in lines[4] and "2.50 s" in lines[4]


async def test_narrow_table_drops_the_tunnel_column_and_cuts_long_paths(tmp_path: Path) -> None:
    db = fill(tmp_path / "captures.db", [make_exchange(0, target="/" + "x" * 200)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(RequestTable)
        await _rows_shown(table)
        await pilot.pause()
        header, row = screen_lines(table)[:2]
        assert "TUNNEL" not in header
        assert "…" in row and row.rstrip().endswith("512B")


async def test_a_store_error_while_applying_live_changes_is_said_and_the_changes_are_kept(tmp_path: Path) -> None:
    from devtunnel.errors import StoreError
    from devtunnel.tui.app import InspectorApp
    from devtunnel.tui.backend import Backend

    class FailingOnce(Backend):
        failed = False

        async def changed_rows(self, ids, filter=None):  # type: ignore[no-untyped-def]
            if not self.failed:
                self.failed = True
                raise StoreError(f"{self.db_path} is locked by another process (database is locked)")
            return await super().changed_rows(ids, filter)

    db = fill(tmp_path / "captures.db", traffic(3))
    app = InspectorApp(FailingOnce(db), history_path=tmp_path / "history")
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(RequestTable)
        await _rows_shown(table)
        fill(db, [make_exchange(7, target="/late")])
        app.live.changed([fixed_id(7)])
        await async_wait_for(lambda: app._notifications, what="the notice")
        assert "is locked by another process" in list(app._notifications)[-1].message
        assert app.is_running
        app.live.changed([])  # the next burst of changes retries the ones that failed
        app.live.flush()
        await async_wait_for(lambda: table.cached_row(fixed_id(7)) is not None, what="the late row")
        await pilot.pause()
        assert "/late" in screen_lines(table)[4]


async def test_the_cursor_is_scrolled_into_view_before_a_layout_has_shown_the_scrollbar(tmp_path: Path) -> None:
    # The table scrolls to its cursor a refresh after the list grew; Textual lets a widget scroll
    # only once a layout has shown its scrollbar, which may come later still: the following
    # table then stayed at its top, the newest row out of sight, until a key or a new row.
    db = fill(tmp_path / "captures.db", traffic(3))
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(RequestTable)
        await _rows_shown(table)
        await pilot.pause()
        assert not table.allow_vertical_scroll  # 3 rows: no scrollbar yet
        table.set_total(60)  # the list grew, and no layout has run since
        table.cursor = 59
        table._scroll_cursor_into_view()
        assert round(table.scroll_y) == 59 - table._page + 1
