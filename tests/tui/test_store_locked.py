"""The inspector while another process holds its capture database locked.

In WAL mode readers are not blocked by a writer; what blocks them is a connection in exclusive
locking mode (``PRAGMA locking_mode=EXCLUSIVE`` and a transaction): SQLite tools, a backup, an
older devtunnel. It can only be had while no reader has the file open, so it meets the
inspector when it starts, or when the file at the path is replaced by one that is held locked.
Either way the store's reads wait in the busy handler (a second) on reader threads, never on
the screen's: keys work, the lock is said once, the rows on screen stay, and the list is read
again every second until the lock is let go, without any change to wait for.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.tui.app import InspectorApp
from devtunnel.tui.screens.help import HelpScreen
from devtunnel.tui.widgets import FilterBar, RequestTable
from tests.helpers import async_wait_for
from tests.kit.procs import Proc, procs  # noqa: F401  (the fixture, by name)
from tests.tui.app_fixtures import fill, fixed_id, inspector, make_exchange, traffic, utc

LOCKER = """
import signal, sqlite3, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
conn.execute("PRAGMA locking_mode=EXCLUSIVE")
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
signal.sigwait({signal.SIGINT})
conn.close()
print("released", flush=True)
"""
"""Another process that holds ``argv[1]`` locked until SIGINT."""


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


def _lock(procs: list[Proc], db: Path) -> Proc:
    locker = Proc([sys.executable, "-c", LOCKER, str(db)])
    procs.append(locker)
    locker.line(lambda line: line == "locked")
    return locker


def _notices(app: InspectorApp, title: str) -> list[str]:
    return [n.message for n in app._notifications if n.title == title]


class _LoopLag:
    """The longest the event loop (the screen's thread) went without running a task, sampled every 20 ms."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.02)
            now = loop.time()
            self.longest = max(self.longest, now - last - 0.02)
            last = now

    def stop(self) -> float:
        self._task.cancel()
        return self.longest


async def _keys_work(app: InspectorApp, pilot) -> None:  # type: ignore[no-untyped-def]
    """The help screen opens and closes, and the filter bar takes text (and gives it back)."""
    await pilot.press("question_mark")
    await async_wait_for(lambda: isinstance(app.screen, HelpScreen), what="the help screen")
    await pilot.press("escape")
    await async_wait_for(lambda: not isinstance(app.screen, HelpScreen), what="the help screen to close")
    await pilot.press("slash", "x")
    await async_wait_for(lambda: app.query_one(FilterBar).query_one("Input").value == "x",  # type: ignore[attr-defined]
                         what="the typed filter")
    await pilot.press("backspace", "escape")


async def test_a_store_locked_when_the_inspector_starts_is_said_once_and_read_once_let_go(
        tmp_path: Path, procs: list[Proc]) -> None:  # noqa: F811
    db = fill(tmp_path / "captures.db", traffic(12))
    locker = _lock(procs, db)
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        lag = _LoopLag()
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: _notices(app, "Could not read captures"), timeout=15, what="the notice")
        assert "is locked by another process" in _notices(app, "Could not read captures")[0]
        await _keys_work(app, pilot)
        # No change comes (no agent): the list is read again on its own, and the lock said once.
        tried = app.live._generation
        await async_wait_for(lambda: app.live._generation >= tried + 3, timeout=15, what="three more reads")
        assert len(_notices(app, "Could not read captures")) == 1
        assert not table.ids and app.is_running
        # Each read waited a second on the lock, on a reader thread: the screen never did.
        assert lag.stop() < 0.9
        assert locker.stop() == 0 and locker.out[-1] == "released"
        await async_wait_for(lambda: len(table.ids) == 12 and table.cached_row(fixed_id(11)), timeout=15,
                             what="the rows once the lock is let go")
        assert len(_notices(app, "Could not read captures")) == 1


async def test_a_new_file_held_locked_keeps_the_rows_shown_until_it_can_be_read(
        tmp_path: Path, procs: list[Proc]) -> None:  # noqa: F811
    db = fill(tmp_path / "captures.db", traffic(12))
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: len(table.ids) == 12 and table.cached_row(fixed_id(11)), what="12 rows")
        # Another file takes the path, held locked by another process from before it is there.
        new = fill(tmp_path / "next.db", [make_exchange(n, target=f"/new/{n}") for n in (20, 21, 22)])
        locker = _lock(procs, new)
        for name in ("captures.db", "captures.db-wal", "captures.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        os.replace(new, db)
        lag = _LoopLag()
        await async_wait_for(lambda: _notices(app, "Could not read captures"), timeout=15, what="the lock's notice")
        assert "is locked by another process" in _notices(app, "Could not read captures")[0]
        assert _notices(app, "Capture database replaced") == [f"{db} is another file now: showing its captures."]
        assert list(table.ids) == [fixed_id(n) for n in range(12)]  # the last rows stay
        await pilot.press("up")
        assert table.current_id == fixed_id(10)
        await _keys_work(app, pilot)
        tried = app.live._generation
        await async_wait_for(lambda: app.live._generation >= tried + 2, timeout=15, what="two more reads")
        assert len(_notices(app, "Could not read captures")) == 1
        assert lag.stop() < 0.9
        assert locker.stop() == 0
        await async_wait_for(lambda: list(table.ids) == [fixed_id(n) for n in (20, 21, 22)], timeout=15,
                             what="the new file's rows")
        assert len(_notices(app, "Could not read captures")) == 1
        assert len(_notices(app, "Capture database replaced")) == 1


async def test_keys_move_the_table_at_once_while_its_page_reads_wait_on_a_lock(
        tmp_path: Path, procs: list[Proc]) -> None:  # noqa: F811
    """Before: the table read its pages in a callback of its own, and its keys waited behind each
    read (a second on the lock, two a page): six pages up took eight seconds, and each failed read
    was a notice of its own."""
    db = fill(tmp_path / "captures.db", [make_exchange(n) for n in range(300)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: table.total == 300 and table.cached_row(fixed_id(299)), what="300 rows")
        new = fill(tmp_path / "next.db", [make_exchange(n) for n in range(400, 700)])
        locker = _lock(procs, new)
        for name in ("captures.db", "captures.db-wal", "captures.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        os.replace(new, db)
        await async_wait_for(lambda: _notices(app, "Capture database replaced"), timeout=15, what="the notice")
        started = time.monotonic()
        for _ in range(6):  # past the rows held: each page up needs a read, which waits on the lock
            before = table.cursor
            await pilot.press("pageup")
            assert table.cursor < before
        assert time.monotonic() - started < 3.0
        await async_wait_for(lambda: _notices(app, "Could not read captures"), timeout=15, what="the lock's notice")
        await pilot.pause(1.5)
        assert len(_notices(app, "Could not read captures")) == 1
        assert locker.stop() == 0
        await async_wait_for(lambda: table.total == 300 and table.cached_row(fixed_id(699)), timeout=15,
                             what="the new file's rows")
