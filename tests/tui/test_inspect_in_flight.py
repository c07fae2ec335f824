"""``devtunnel inspect`` beside an agent it did not start: a request in flight when that agent is
killed turns to ``agent_gone`` on the table, and one it finishes shows its end, with no notice
from any agent and without reading the list again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.capture import runs
from devtunnel.tui.widgets.request_table import RequestTable
from tests.helpers import async_wait_for, wait_for
from tests.tui.app_fixtures import inspector

CHILD = Path(__file__).parents[1] / "capture" / "inflight_child.py"


class Recording:
    """``inflight_child.py``: another process recording one exchange still in flight into ``db``."""

    def __init__(self, db: Path) -> None:
        self.popen = subprocess.Popen([sys.executable, str(CHILD), str(db), "1"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, cwd=CHILD.parents[2])
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(line.strip() for line in self.popen.stdout),  # type: ignore[union-attr]
                         daemon=True).start()
        self.id = wait_for(lambda: self.lines and self.lines[0], timeout=30, what="the id in flight")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)


@pytest.fixture
def recording(tmp_path: Path) -> Iterator[Recording]:
    child = Recording(tmp_path / "captures.db")
    yield child
    child.stop()


def _row(table: RequestTable, exchange_id: str):  # type: ignore[no-untyped-def]
    return table.cached_row(exchange_id)


async def test_a_request_in_flight_of_an_agent_killed_meanwhile_turns_to_agent_gone(
        tmp_path: Path, recording: Recording) -> None:
    app = inspector(tmp_path / "captures.db", tmp_path)
    async with app.run_test(size=(100, 20)):
        table = app.table
        await async_wait_for(lambda: _row(table, recording.id) is not None, what="the row in flight")
        assert _row(table, recording.id).duration is None
        generation = app.live._generation
        os.kill(recording.popen.pid, signal.SIGKILL)
        wait_for(lambda: (stat := runs._stat(recording.popen.pid)) is None or stat[0] == "Z", what="the agent killed")
        row = await async_wait_for(lambda: (r := _row(table, recording.id)) is not None and r.error and r,
                                   timeout=30, what="the row ended")
        assert row.error == "agent_gone" and row.duration is not None
        assert app.live._generation == generation  # the row was read again, not the whole list
        assert "…" not in "".join(s.text for s in table.render_line(1))  # redrawn: no longer in flight


async def test_a_request_in_flight_that_another_agent_finishes_shows_its_end(
        tmp_path: Path, recording: Recording) -> None:
    app = inspector(tmp_path / "captures.db", tmp_path)
    async with app.run_test(size=(100, 20)):
        table = app.table
        await async_wait_for(lambda: _row(table, recording.id) is not None, what="the row in flight")
        recording.popen.stdin.write("finish\n")  # type: ignore[union-attr]
        recording.popen.stdin.flush()  # type: ignore[union-attr]
        wait_for(lambda: "finished" in recording.lines, what="the exchange finished")
        row = await async_wait_for(lambda: (r := _row(table, recording.id)) is not None and r.duration is not None
                                   and r, timeout=30, what="the row's end")
        assert row.status == 200 and row.error is None


async def test_a_response_broken_midway_shows_its_status_in_the_look_of_err(tmp_path: Path) -> None:
    """A 200 whose body an agent killed mid-way cut off (``agent_gone``) read as a plain 200 on
    the table, green as a success; ``devtunnel requests`` says ``200 ERR``."""
    from tests.tui.app_fixtures import fill, make_exchange

    db = fill(tmp_path / "captures.db", [make_exchange(0, target="/ok"),
                                         make_exchange(1, target="/cut", error="agent_gone"),
                                         make_exchange(2, target="/last")])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.table
        await async_wait_for(lambda: table.total == 3 and table.row_at(0) is not None, what="the rows")
        await pilot.pause()  # the cursor is on /last, in a look of its own
        error = table.get_component_rich_style("request-table--status-error")
        ok = table.get_component_rich_style("request-table--status-2xx")
        cut = next(s for s in table.render_line(2) if s.text.strip() == "200")
        fine = next(s for s in table.render_line(1) if s.text.strip() == "200")
        assert cut.style is not None and cut.style.reverse and cut.style.color == error.color
        assert fine.style is not None and fine.style.color == ok.color and not fine.style.reverse


async def test_a_row_another_process_stores_shows_under_a_filter_too(tmp_path: Path) -> None:
    """``devtunnel inspect`` with ``method:POST`` in force beside an agent recording: the POSTs it
    recorded never showed (only a list without a filter was counted again), until the filter changed."""
    from devtunnel.capture.store import Store
    from tests.tui.app_fixtures import fill, make_exchange

    db = fill(tmp_path / "captures.db", [make_exchange(n, method="POST" if n % 2 else "GET") for n in range(6)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.table
        await async_wait_for(lambda: table.total == 6 and table.current_id is not None, what="the list")
        outside = app.live._outside
        await async_wait_for(lambda: outside.next_at > 0 and not outside.running, what="the store counted once")
        await pilot.press("slash", *"method:POST", "enter")
        await async_wait_for(lambda: table.total == 3 and table.current_id == make_exchange(5).id, what="the POSTs")
        generation = app.live._generation
        writer = Store(db)
        try:
            writer.put_many([make_exchange(6, method="GET"), make_exchange(7, method="POST")])
        finally:
            writer.close()
        await async_wait_for(lambda: table.total == 4 and table.current_id == make_exchange(7).id, timeout=15,
                             what="the new POST shown")
        assert [table.row_at(i).id for i in range(4)] == [make_exchange(n).id for n in (1, 3, 5, 7)]  # type: ignore[union-attr]
        assert app.live._generation == generation  # its end read again, not the whole list
