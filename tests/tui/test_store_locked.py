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

import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtunnel.capture.store import Store
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


@pytest.fixture(autouse=True)
def _said(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every notification the inspector raises, kept on the app (``_notices``): a notice leaves
    the screen after its timeout (10 s), and under load a test's steps after it can take longer,
    so counting those on screen found none where one was said."""
    original = InspectorApp.notify

    def notify(self: InspectorApp, message: str, *, title: str = "", **options: Any) -> None:
        self.__dict__.setdefault("_said", []).append((title, message))
        original(self, message, title=title, **options)

    monkeypatch.setattr(InspectorApp, "notify", notify)


def _notices(app: InspectorApp, title: str) -> list[str]:
    """The messages of every notification titled ``title`` the app raised, shown or gone."""
    return [message for said_title, message in app.__dict__.get("_said", []) if said_title == title]


@pytest.fixture
def read_threads(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """The threads every read of the inspector's ran on (each takes its thread's connection first): a read
    that waits a second on the lock must never run on the screen's thread."""
    threads: set[int] = set()
    conn = Store._conn

    def recorded(self: Store) -> sqlite3.Connection:
        if self.readonly:  # the inspector's (the tests fill their files with a writer first)
            threads.add(threading.get_ident())
        return conn(self)

    monkeypatch.setattr(Store, "_conn", recorded)
    return threads


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
        tmp_path: Path, procs: list[Proc], read_threads: set[int]) -> None:  # noqa: F811
    db = fill(tmp_path / "captures.db", traffic(12))
    locker = _lock(procs, db)
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
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
        assert read_threads and threading.get_ident() not in read_threads
        assert locker.stop() == 0 and locker.out[-1] == "released"
        await async_wait_for(lambda: len(table.ids) == 12 and table.cached_row(fixed_id(11)), timeout=15,
                             what="the rows once the lock is let go")
        assert len(_notices(app, "Could not read captures")) == 1


async def test_a_new_file_held_locked_keeps_the_rows_shown_until_it_can_be_read(
        tmp_path: Path, procs: list[Proc], read_threads: set[int]) -> None:  # noqa: F811
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
        assert read_threads and threading.get_ident() not in read_threads
        assert locker.stop() == 0
        await async_wait_for(lambda: list(table.ids) == [fixed_id(n) for n in (20, 21, 22)], timeout=15,
                             what="the new file's rows")
        assert len(_notices(app, "Could not read captures")) == 1
        assert len(_notices(app, "Capture database replaced")) == 1


async def test_keys_move_the_table_at_once_while_its_page_reads_wait_on_a_lock(
        tmp_path: Path, procs: list[Proc], read_threads: set[int]) -> None:  # noqa: F811
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
        # Each page's read waits at least a second on the lock: six presses that each waited for
        # their read took six seconds and more (10.3 s measured before); they take milliseconds.
        assert time.monotonic() - started < 5.0
        assert threading.get_ident() not in read_threads
        await async_wait_for(lambda: _notices(app, "Could not read captures"), timeout=15, what="the lock's notice")
        failed = table.reads
        await async_wait_for(lambda: table.reads >= failed + 2, timeout=15, what="two more page reads")
        assert len(_notices(app, "Could not read captures")) == 1
        assert locker.stop() == 0
        # The rows under the cursor come from the new file (where the cursor lands, the end or
        # the position it was paged to, depends on which read came back first).
        new_ids = {fixed_id(n) for n in range(400, 700)}
        await async_wait_for(lambda: table.total == 300 and table.current_id in new_ids, timeout=15,
                             what="the new file's rows")


async def test_a_db_path_the_system_cannot_look_at_is_one_notice_not_an_unexpected_error(tmp_path: Path) -> None:
    """``devtunnel inspect --db`` under a folder this user cannot search (or a name too long):
    the inspector said "Unexpected error PermissionError"; the CLI's commands say what to do."""
    db = tmp_path / ("x" * 300) / "captures.db"  # ENAMETOOLONG, the same path as EACCES (root searches any folder)
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 20)) as pilot:
        await async_wait_for(lambda: _notices(app, "Could not read captures"), timeout=15, what="the notice")
        await pilot.pause()
        said = _notices(app, "Could not read captures")
        assert len(said) == 1 and "pass --db with a shorter path" in said[0], said
        assert not [n for n in app._notifications if "Unexpected" in (n.title or "") or "Unexpected" in n.message]


async def test_a_file_that_is_not_a_database_is_said_once(tmp_path: Path) -> None:
    db = tmp_path / "captures.db"
    db.write_text("not a database\n" * 100)
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 20)) as pilot:
        await async_wait_for(lambda: _notices(app, "Could not read captures"), timeout=15, what="the notice")
        for _ in range(3):  # the list is read again every second, and the status mix counted
            await pilot.pause(1.0)
        assert len(_notices(app, "Could not read captures")) == 1, _notices(app, "Could not read captures")
