"""The request table while an agent records: every row keeps its number, so each key moves the
cursor exactly one request, whatever was recorded between the table's count and its reads."""

from __future__ import annotations

from pathlib import Path

from devtunnel.capture.store import Store
from devtunnel.tui.widgets.request_table import RequestTable
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import fill, inspector, make_exchange


def _numbering(table: RequestTable, ids: list[str]) -> list[tuple[int, str, str]]:
    """Rows of the table's window whose index is not their place in ``ids``: (index, shown, true)."""
    wrong = []
    for index in range(table.total):
        row = table.row_at(index)
        if row is not None and (index >= len(ids) or row.id != ids[index]):
            wrong.append((index, row.id, ids[index] if index < len(ids) else ""))
    return wrong


async def test_rows_recorded_before_a_read_from_the_end_keep_every_row_in_its_place(tmp_path: Path) -> None:
    """At the top of a long list, new requests are recorded (not announced yet, as under traffic),
    then ``f`` jumps to the end: the newest page holds them, and the table numbers its rows by the
    store it read them from, not by its earlier count (which put every row five places early, so
    ten presses of k showed the request fifteen up)."""
    db = fill(tmp_path / "captures.db", [make_exchange(n, target=f"/r/{n}") for n in range(2000)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.table
        await async_wait_for(lambda: table.total == 2000 and table.current_id is not None, what="the list")
        await pilot.press("g")
        await async_wait_for(lambda: table.current_id == make_exchange(0).id, what="the first row")
        writer = Store(db)
        try:
            recorded = [make_exchange(n, target=f"/r/{n}") for n in range(2000, 2005)]
            writer.put_many(recorded)  # recorded, its notice still on the way
            await pilot.press("f")
            ids = writer.ids()
            await async_wait_for(lambda: table.row_at(table.cursor) is not None, what="the newest rows")
            app.live.changed([e.id for e in recorded])  # the notice arrives
            await async_wait_for(lambda: table.total == 2005 and table.current_id == ids[-1], what="the end")
            assert _numbering(table, ids) == []
            await pilot.press(*["k"] * 10)
            assert table.current_id == ids[-11]
            assert _numbering(table, ids) == []
        finally:
            writer.close()
