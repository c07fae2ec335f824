"""Workers cancelled before they start leave no coroutine behind that was never awaited.

The inspector used to hand ``run_worker`` coroutine objects (``self._apply(ids, generation)``).
A worker cancelled before its task first ran (a newer worker of an exclusive group, or the app
quitting just after a live change was flushed) never awaited its coroutine, and Python warned
``coroutine 'LiveView._apply' was never awaited`` when it was collected, once in a full run of
the suite. Workers now get the async function, called only once they run.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.tui.app import InspectorApp
from devtunnel.tui.widgets import RequestTable
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import fill, fixed_id, inspector, traffic, utc


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


def _never_awaited(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "never awaited" in str(w.message)]


async def _loaded(app: InspectorApp, count: int) -> RequestTable:
    table = app.query_one(RequestTable)
    await async_wait_for(lambda: len(table.ids) == count and table.cached_row(table.ids[-1]), what=f"{count} rows")
    return table


async def test_quitting_just_after_live_changes_are_flushed_leaves_no_coroutine_never_awaited(tmp_path: Path) -> None:
    db = fill(tmp_path / "captures.db", traffic(12))
    app = inspector(db, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with app.run_test(size=(100, 30)):
            await _loaded(app, 12)
            app.live.changed([fixed_id(3)])
            app.live.flush()  # the worker that applies it is started ...
            await app.action_quit()  # ... and cancelled before it first runs
        gc.collect()
    assert not _never_awaited(caught)


async def test_a_reload_replaced_before_it_starts_leaves_no_coroutine_never_awaited(tmp_path: Path) -> None:
    db = fill(tmp_path / "captures.db", traffic(12))
    app = inspector(db, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with app.run_test(size=(100, 30)) as pilot:
            table = await _loaded(app, 12)
            app.live.reload()
            app.live.reload()  # the same exclusive group: the first is cancelled before it runs
            await pilot.pause()
            await async_wait_for(lambda: app.live._sourced == app.live._generation, what="the second reload")
            assert len(table.ids) == 12
        gc.collect()
    assert not _never_awaited(caught)
