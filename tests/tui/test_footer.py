"""The key bar: screens opened and closed all day leave none of its keys behind."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets._footer import FooterKey

from devtunnel.tui.screens.detail import DetailScreen
from devtunnel.tui.screens.help import HelpScreen
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import fill, inspector, traffic, utc


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


def _dead_keys() -> list[FooterKey]:
    """Key bar keys alive in memory but on no screen (their bar recomposed or their screen closed),
    this test's and any earlier test's in the same process."""
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, FooterKey) and not o.is_attached]


async def test_screens_opened_and_closed_leave_no_key_bar_keys_alive(tmp_path: Path) -> None:
    # The key bar recomposes whenever the bindings change (a screen pushed or popped, the focus
    # moved); each key it made is bound to the bar's ``compact``, and Textual let go of the
    # binding of a removed key only when ``compact`` changed, which it never does: each help or
    # detail screen opened kept a bar's worth of dead keys, with their rendered lines, for good.
    app = inspector(fill(tmp_path / "captures.db", traffic(12)), tmp_path)
    before = weakref.WeakSet(_dead_keys())  # left by earlier tests of the run: not this app's
    async with app.run_test(size=(100, 30)) as pilot:
        await async_wait_for(lambda: app.live.loaded.is_set(), what="the list loaded")
        for _ in range(5):
            for key, screen in (("question_mark", HelpScreen), ("enter", DetailScreen)):
                await pilot.press(key)
                await async_wait_for(lambda screen=screen: isinstance(app.screen, screen), what=f"{screen.__name__} open")
                await pilot.press("escape")
                await async_wait_for(lambda screen=screen: not isinstance(app.screen, screen),
                                     what=f"{screen.__name__} closed")
        await async_wait_for(lambda: not [k for k in _dead_keys() if k not in before], interval=0.2,
                             what="no key of a recomposed or closed key bar alive")


async def test_keys_that_do_not_fit_stay_under_the_palette_key(tmp_path: Path) -> None:
    """In a narrow terminal the keys that do not fit go under the ``^p palette`` key at the right:
    none shows a stray letter in the last column (Textual's compact bar gave the palette key the
    margin of the others, a free cell where the key under it showed: ``^p paletteq``)."""
    app = inspector(fill(tmp_path / "captures.db", traffic(12)), tmp_path)
    async with app.run_test(size=(60, 15)) as pilot:
        await async_wait_for(lambda: app.live.loaded.is_set(), what="the list loaded")
        for key in ("", "enter"):
            if key:
                await pilot.press(key)
                await async_wait_for(lambda: isinstance(app.screen, DetailScreen), what="the detail open")
            await pilot.pause()
            bottom = "".join(segment.text for segment in app.screen._compositor.render_strips()[-1])
            assert bottom.rstrip().endswith("^p palette"), bottom
