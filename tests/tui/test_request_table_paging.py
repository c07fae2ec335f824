"""The request table over a large store: it reads pages around the view, never the whole list.

A store of 200,000 exchanges (a thousand recorded, the rest copied in SQL under ids that sort
in order, so the row at index ``n`` is ``fixed_id(n)``). Every read the inspector makes of the
store is counted by a Backend subclass: the bound is on rows read, never on time.
"""

from __future__ import annotations

import asyncio
import sqlite3
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, TypeVar

import pytest
from textual.app import App, ComposeResult

from devtunnel.capture.filters import parse
from devtunnel.capture.rows import Row
from devtunnel.capture.store import RETENTION_RUN, Store
from devtunnel.tui.app import InspectorApp
from devtunnel.tui.backend import Backend
from devtunnel.tui.widgets.request_table import RequestTable
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import fill, fixed_id, line_text, make_exchange, utc

T = TypeVar("T")

ROWS = 200_000
READ_BOUND = 5_000
"""Rows the whole session below may read: 2.5 % of the store (it reads about 1,300)."""


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


class CountingBackend(Backend):
    """A Backend that counts every store read and every row or id it brings back."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.rows = 0

    async def _read(self, fn: Callable[[Store], T], empty: T, *, screen: bool = False) -> T:
        result = await super()._read(fn, empty, screen=screen)
        self.calls += 1
        self.rows += _rows_in(result)
        return result

    async def ids(self, filter: object = None) -> list[str]:
        raise AssertionError("the inspector read every id of the store")


def _rows_in(value: object) -> int:
    if isinstance(value, (list, tuple)):
        return sum(1 if isinstance(item, (Row, str)) else _rows_in(item) for item in value)
    return 0


def _big_store(path: Path) -> Path:
    """``ROWS`` exchanges, number n at ``fixed_id(n)``: status 404 for every tenth, else 200."""
    fill(path, [make_exchange(n, target=f"/items/{n}", method="POST" if n % 10 == 0 else "GET",
                              status=404 if n % 10 == 0 else 200) for n in range(1000)])
    conn = sqlite3.connect(path)
    try:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(exchange_rows)")]
        copied = ", ".join({"id": "printf('01KB0%021d', n.x)", "started_at": "t.started_at + n.x - n.x % 1000",
                            "target_text": "'/items/' || n.x", "path": "'/items/' || n.x"}.get(c, f"t.{c}")
                           for c in columns)
        with conn:
            conn.execute(f"""
                WITH RECURSIVE n(x) AS (SELECT 1000 UNION ALL SELECT x + 1 FROM n WHERE x < {ROWS - 1})
                INSERT INTO exchange_rows ({', '.join(columns)})
                SELECT {copied} FROM n JOIN exchange_rows t ON t.id = printf('01KB0%021d', n.x % 1000)""")
            # The store counts what it writes itself: rows copied in SQL are counted here.
            conn.execute("UPDATE stats SET n = (SELECT count(*) FROM exchange_rows), "
                         "bytes = (SELECT sum(bytes) FROM exchange_rows)")
    finally:
        conn.close()
    return path


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _big_store(tmp_path_factory.mktemp("big") / "captures.db")


async def _bottom(table: RequestTable) -> None:
    await async_wait_for(lambda: table.total and table.row_at(table.total - 1) is not None, what="the newest rows")


async def test_a_200k_store_is_browsed_reading_a_bounded_number_of_rows(big_db: Path, tmp_path: Path) -> None:
    backend = CountingBackend(big_db)
    app = InspectorApp(backend, history_path=tmp_path / "history")
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(RequestTable)
        await _bottom(table)
        # on screen: following scrolls to the bottom after the rows are read (call_after_refresh)
        await async_wait_for(lambda: f"/items/{ROWS - 1} " in _bottom_line(table), what="the newest row on screen")
        assert table.total == ROWS and table.current_id == fixed_id(ROWS - 1)

        await pilot.press("home")
        await async_wait_for(lambda: table.row_at(0) is not None, what="the first rows")
        await pilot.press(*["pagedown"] * 40)
        await async_wait_for(lambda: table.current_id is not None, what="the cursor's row")
        assert table.current_id == fixed_id(table.cursor)

        # A scrollbar drag to the middle: a jump, read from the nearer end.
        table.scroll_to(y=ROWS // 2, animate=False, immediate=True)
        await async_wait_for(lambda: table.row_at(ROWS // 2 + 5) is not None, what="rows in the middle")
        assert [table.row_at(ROWS // 2 + i).id for i in range(5)] == [fixed_id(ROWS // 2 + i) for i in range(5)]  # type: ignore[union-attr]

        await pilot.press("end")
        await _bottom(table)
        await pilot.press(*["up"] * 100)
        await async_wait_for(lambda: table.current_id == fixed_id(ROWS - 101), what="a hundred rows up")

        app.live.set_filter("status:404", parse("status:404"))
        await async_wait_for(lambda: table.total_exact and table.total == ROWS // 10, what="the exact count")
        # Not following: the cursor stays where it was, on the nearest request that matches.
        await async_wait_for(lambda: table.current_id == fixed_id(ROWS - 100), what="the cursor kept in place")
        await pilot.press("end")
        await _bottom(table)
        await async_wait_for(lambda: table.row_at(table.total - 1).id == fixed_id(ROWS - 10), what="the newest 404")  # type: ignore[union-attr]
        app.live.set_filter("", parse(""))
        await async_wait_for(lambda: table.total == ROWS, what="every request again")
        await _bottom(table)

        assert len(table.window) <= table.WINDOW_ROWS
        assert table.rows_read < READ_BOUND, table.rows_read
        assert backend.rows < READ_BOUND, backend.rows
        assert backend.calls < 200, backend.calls


async def test_live_traffic_on_a_200k_store_reads_only_the_new_rows(big_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "captures.db"
    db.write_bytes(big_db.read_bytes())
    backend = CountingBackend(db)
    app = InspectorApp(backend, history_path=tmp_path / "history")
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(RequestTable)
        await _bottom(table)
        before = backend.rows
        store = Store(db, max_exchanges=ROWS)  # the oldest make room, in runs (store.RETENTION_RUN)
        for batch in range(10):
            new = [make_exchange(ROWS + batch * 50 + i, target=f"/new/{batch}/{i}") for i in range(50)]
            store.put_many(new)
            app.live.changed(ex.id for ex in new)
            # on screen: the bottom line drawn shows the batch's last row (following scrolls after the read)
            await async_wait_for(lambda batch=batch: f"/new/{batch}/49" in _bottom_line(table), what="the batch on screen")
        kept = store.count()
        store.close()
        await pilot.pause()
        assert ROWS - ROWS // RETENTION_RUN <= kept <= ROWS
        assert table.total == kept and table.following
        assert table.current_id == fixed_id(ROWS + 499)
        assert "/new/9/49" in _bottom_line(table)
        assert backend.rows - before < 2_000, backend.rows - before
        assert len(table.window) <= table.WINDOW_ROWS


def _bottom_line(table: RequestTable) -> str:
    return line_text(table, table.scrollable_content_region.height - 1)


class ListSource:
    """A RowSource over rows in memory (what a store's pages are, without the store)."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.reads = 0

    def _ids(self) -> list[str]:
        return [r.id for r in self.rows]

    async def after(self, exchange_id: str | None, limit: int, skip: int = 0) -> list[Row]:
        self.reads += 1
        start = 0 if exchange_id is None else bisect_right(self._ids(), exchange_id)
        return self.rows[start + skip:start + skip + limit]

    async def before(self, exchange_id: str | None, limit: int, skip: int = 0) -> list[Row]:
        self.reads += 1
        end = len(self.rows) if exchange_id is None else bisect_left(self._ids(), exchange_id)
        end = max(0, end - skip)
        return self.rows[max(0, end - limit):end]

    async def position(self, exchange_id: str) -> int:
        return bisect_left(self._ids(), exchange_id)

    async def newest(self, limit: int, skip: int = 0) -> tuple[list[Row], int | None]:
        return await self.before(None, limit, skip), None  # an estimate's count, as a filtered list's


class _TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield RequestTable()


def _row(n: int) -> Row:
    return Row(fixed_id(n), "shop", 0.0, "GET", f"/r/{n}", "x", 200, 0.1, 1, None, None, False)


@pytest.mark.parametrize("told", [100, 900])
async def test_scrolling_up_from_the_end_reaches_the_first_row_when_the_count_was_wrong(told: int) -> None:
    rows = [_row(n) for n in range(500)]
    app = _TableApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(RequestTable)
        table.set_source(ListSource(rows), told, exact=False)  # an estimate, off either way
        await async_wait_for(lambda: table.row_at(table.total - 1) is not None, what="the newest rows")
        assert table.row_at(table.total - 1).id == fixed_id(499)  # type: ignore[union-attr]
        for _ in range(60):
            await pilot.press("pageup")
            await async_wait_for(lambda: table.current_id is not None, what="the cursor's row")
            top = table.cursor
            shown = [table.row_at(i) for i in range(top, min(table.total, top + 5))]
            ids = [r.id for r in shown if r is not None]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            assert [int(i[5:]) for i in ids] == list(range(int(ids[0][5:]), int(ids[0][5:]) + len(ids)))
        assert table.current_id == fixed_id(0) and table.cursor == 0
        assert table.total == 500


class GatedSource(ListSource):
    """Reads what the list holds when asked, but answers only once ``gate`` opens."""

    def __init__(self, rows: list[Row]) -> None:
        super().__init__(rows)
        self.gate = asyncio.Event()
        self.asked = asyncio.Event()

    async def before(self, exchange_id: str | None, limit: int, skip: int = 0) -> list[Row]:
        answer = await super().before(exchange_id, limit, skip)
        self.asked.set()
        await self.gate.wait()
        return answer


async def test_a_page_read_before_live_rows_arrived_does_not_drop_them() -> None:
    rows = [_row(0)]
    source = GatedSource(rows)
    app = _TableApp()
    async with app.run_test(size=(80, 24)):
        table = app.query_one(RequestTable)
        table.set_source(source, 1)
        await asyncio.wait_for(source.asked.wait(), 10)  # the newest page is being read: [row 0]
        rows.append(_row(1))
        table.apply_changes([rows[1]], [rows[1].id], total=2)  # row 1 arrives meanwhile
        source.gate.set()
        await async_wait_for(lambda: table.row_at(1) is not None, what="the live row")
        assert [table.row_at(i).id for i in range(2)] == [fixed_id(0), fixed_id(1)]  # type: ignore[union-attr]
        assert table.total == 2 and table.current_id == fixed_id(1)


async def test_the_first_batch_of_live_rows_on_an_empty_list_is_shown_whole() -> None:
    app = _TableApp()
    async with app.run_test(size=(80, 24)):
        table = app.query_one(RequestTable)
        table.set_source(ListSource([]), 0, tail=([], 60))
        rows = [_row(0), _row(1), _row(2)]
        table.apply_changes(rows, [r.id for r in rows], total=3)
        assert [table.row_at(i).id for i in range(3)] == [fixed_id(0), fixed_id(1), fixed_id(2)]  # type: ignore[union-attr]
        assert table.total == 3 and table.current_id == fixed_id(2)
