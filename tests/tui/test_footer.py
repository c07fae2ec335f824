"""The key bar: it fits the terminal and always says how to quit; screens opened and closed all
day leave none of its keys behind."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input
from textual.widgets._footer import FooterKey

from devtunnel.tui.app import InspectorApp
from devtunnel.tui.backend import TunnelView
from devtunnel.tui.screens.detail import DetailScreen
from devtunnel.tui.screens.diff import DiffScreen
from devtunnel.tui.screens.edit import EditReplayScreen
from devtunnel.tui.screens.export import ExportScreen
from devtunnel.tui.screens.help import HelpScreen
from devtunnel.tui.supervisor import AgentStatus
from devtunnel.tui.widgets import TunnelsPanel
from devtunnel.tui.widgets.footer import Footer
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


async def test_keys_that_do_not_fit_leave_the_palette_key_whole(tmp_path: Path) -> None:
    """In a narrow terminal the keys that do not fit are left out, and none shows a stray letter
    in the last column (Textual's compact bar gave the palette key the margin of the others, a
    free cell where the key under it showed: ``^p paletteq``)."""
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
            _whole(app)


def _bar(app: InspectorApp) -> tuple[str, list[FooterKey]]:
    """The bottom line of the screen on top, and the keys its bar shows (the palette's last)."""
    bottom = "".join(segment.text for segment in app.screen._compositor.render_strips()[-1])
    footer = app.screen.query_one(Footer)
    return bottom, [key for key in footer.query_children(FooterKey) if key.display]


def _whole(app: InspectorApp) -> str:
    """The bar's line, once every key it shows is drawn whole (none cut, none under the palette key)."""
    bottom, keys = _bar(app)
    palettes = [key for key in keys if key.has_class("-command-palette")]
    edge = palettes[0].region.x if palettes else app.size.width
    for key in keys:
        label = f"{key.key_display} {key.description}"
        assert label in bottom, (label, bottom)
        if key not in palettes:
            assert key.region.right < edge, (label, bottom)
    return bottom


async def _bar_settled(pilot: Pilot[None], screen: type[Screen[object]] | None = None) -> str:
    app = pilot.app
    assert isinstance(app, InspectorApp)
    if screen is not None:
        await async_wait_for(lambda: isinstance(app.screen, screen), what=f"{screen.__name__} open")
    # The bar recomposes a refresh after the bindings change.
    await async_wait_for(lambda: app.screen.query_one(Footer).query_children(FooterKey), what="the key bar")
    await pilot.pause()
    await pilot.pause()
    return _whole(app)


async def test_at_80_columns_every_screen_and_focus_shows_how_to_quit_with_no_key_cut(tmp_path: Path) -> None:
    """With the tunnels panel focused the bar was cut at ``q``; in the filter (where q types)
    and on the screens where q closes, it said nothing about quitting at all."""
    app = inspector(fill(tmp_path / "captures.db", traffic(12)), tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await async_wait_for(lambda: app.live.loaded.is_set(), what="the list loaded")
        panel = app.query_one(TunnelsPanel)
        panel.set_agent(AgentStatus("running", pid=1, api_url="http://127.0.0.1:4040", restarts=0))
        panel.update_tunnels([
            TunnelView("shop", "http://shop.localhost:8000", "http://127.0.0.1:3000", "online", requests=20),
            TunnelView("hooks", "http://hooks.localhost:8000", "http://127.0.0.1:5000", "stopped", requests=3),
        ])
        assert "q Quit" in await _bar_settled(pilot)  # the request table
        panel.focus()
        bar = await _bar_settled(pilot)
        assert "s Stop" in bar and "? Help" in bar and "q Quit" in bar, bar
        assert "d Diff" not in bar, bar  # left out: the last key that is not kept
        await pilot.press("down")  # the stopped tunnel
        bar = await _bar_settled(pilot)
        assert "s Start" in bar and "q Quit" in bar, bar
        await pilot.press("slash")
        await async_wait_for(lambda: isinstance(app.focused, Input), what="the filter focused")
        bar = await _bar_settled(pilot)
        assert "esc Clear filter" in bar and "^c Quit" in bar and "q Quit" not in bar, bar  # q types there
        await pilot.press("escape")
        app.table.focus()
        await pilot.press("enter")
        bar = await _bar_settled(pilot, DetailScreen)
        assert "esc Close" in bar and "^c Quit" in bar, bar
        for _ in range(2):  # the headers, then the body
            await pilot.press("tab")
            assert "^c Quit" in await _bar_settled(pilot), bar
        await pilot.press("p")  # "p Pretty" is longer than "p Raw": a key further right gives way
        assert "^c Quit" in await _bar_settled(pilot)
        await pilot.press("escape")
        await pilot.press("m", "up", "d")
        assert "^c Quit" in await _bar_settled(pilot, DiffScreen)
        await pilot.press("escape")
        await pilot.press("e")
        assert "^c Quit" in await _bar_settled(pilot, EditReplayScreen)
        await pilot.press("escape")
        await async_wait_for(lambda: app.screen is app.screen_stack[0], what="back on the main screen")
        for key, screen in (("question_mark", HelpScreen), ("x", ExportScreen)):
            await pilot.press(key)
            assert "esc Close" in await _bar_settled(pilot, screen)  # a dialog: esc leaves it
            await pilot.press("escape")
            await async_wait_for(lambda: app.screen is app.screen_stack[0], what="back on the main screen")
        await pilot.press("ctrl+c")
        await async_wait_for(lambda: app.return_code is not None, what="ctrl+c quit")
