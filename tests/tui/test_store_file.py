"""The inspector when its capture database file is deleted or another file takes its path.

Before, nothing looked at the file: the old rows stayed on screen with no word, whatever was at
the path now. The backend now compares the file's device and inode once a second (one stat).
A deleted file is said once and still read (its connections stay open; an agent still
running makes a new one at the path within about a second); another file at the path is said once and shown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.capture.store import Store
from devtunnel.tui.app import InspectorApp
from devtunnel.tui.backend import FileChange
from devtunnel.tui.widgets import RequestTable
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import fill, fixed_id, inspector, make_exchange, traffic, utc


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


def _notices(app: InspectorApp, title: str) -> list[str]:
    return [n.message for n in app._notifications if n.title == title]


def _remove(db: Path) -> None:
    """``rm captures.db*``."""
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


async def _two_more_looks(app: InspectorApp) -> None:
    """Wait until the inspector has looked at the path twice more (it does every second): what
    it would say of the file by then, it has said."""
    backend = app.live.backend
    looks = 0
    look = backend.file_change

    def counted() -> FileChange | None:
        nonlocal looks
        looks += 1
        return look()

    backend.file_change = counted  # type: ignore[method-assign]
    try:
        await async_wait_for(lambda: looks >= 2, timeout=15, what="two more looks at the path")
    finally:
        del backend.file_change


async def _rows(app: InspectorApp, ids: list[str]) -> RequestTable:
    table = app.query_one(RequestTable)
    await async_wait_for(lambda: list(table.ids) == ids and table.cached_row(ids[-1]) is not None, timeout=15,
                         what=f"the rows {ids}")
    return table


async def test_a_deleted_database_is_said_once_read_on_and_a_new_file_there_is_followed(tmp_path: Path) -> None:
    db = fill(tmp_path / "captures.db", traffic(12))
    agent = Store(db)  # the agent's connection: it records into the file it opened
    app = inspector(db, tmp_path)
    try:
        async with app.run_test(size=(100, 30)):
            await _rows(app, [fixed_id(n) for n in range(12)])
            _remove(db)
            await async_wait_for(lambda: _notices(app, "Capture database moved or deleted"), timeout=15, what="the notice")
            assert _notices(app, "Capture database moved or deleted")[0].startswith(f"{db} was moved or deleted.")
            # The agent goes on recording into the deleted file, and the inspector goes on showing it.
            agent.put(make_exchange(12, target="/after-rm"))
            app.live.changed([fixed_id(12)])
            await _rows(app, [fixed_id(n) for n in range(13)])
            await _two_more_looks(app)
            assert len(_notices(app, "Capture database moved or deleted")) == 1
            assert not _notices(app, "Could not read captures") and not _notices(app, "Unexpected error")
            # The agent restarts: a new file at the path, and the view follows it.
            agent.close()
            fill(db, [make_exchange(n, target=f"/new/{n}") for n in (30, 31)])
            await _rows(app, [fixed_id(30), fixed_id(31)])
            assert _notices(app, "Capture database replaced") == [f"{db} is another file now: showing its captures."]
            assert len(_notices(app, "Capture database moved or deleted")) == 1
            assert not _notices(app, "Could not read captures")
    finally:
        agent.close()


async def test_a_database_moved_over_the_path_is_said_once_and_shown(tmp_path: Path) -> None:
    db = fill(tmp_path / "captures.db", traffic(12))
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)):
        await _rows(app, [fixed_id(n) for n in range(12)])
        other = fill(tmp_path / "other.db", [make_exchange(n, target=f"/other/{n}") for n in (40, 41, 42)])
        _remove(db)
        os.replace(other, db)  # mv other.db captures.db
        table = await _rows(app, [fixed_id(n) for n in (40, 41, 42)])
        assert table.current_id == fixed_id(42)
        await _two_more_looks(app)
        assert _notices(app, "Capture database replaced") == [f"{db} is another file now: showing its captures."]
        assert not _notices(app, "Capture database moved or deleted") and not _notices(app, "Could not read captures")


async def test_a_database_made_after_the_inspector_started_is_shown_without_a_notice(tmp_path: Path) -> None:
    db = tmp_path / "captures.db"
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)):
        await async_wait_for(lambda: app.live.loaded.is_set(), what="the empty list")
        fill(db, traffic(3))  # the agent made it: no change event reaches 'devtunnel inspect'
        await _rows(app, [fixed_id(n) for n in range(3)])
        await _two_more_looks(app)
        assert not app._notifications
