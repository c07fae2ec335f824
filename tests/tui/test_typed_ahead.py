"""Keys typed faster than the inspector handles them: each goes where the keys before it sent the
focus, none is lost or lands elsewhere. The keys are posted as the terminal driver posts a burst
(all at once, before any is handled), not one by one as the pilot presses them."""

from __future__ import annotations

from pathlib import Path

from textual import events
from textual.keys import _character_to_key
from textual.widgets import Input

from devtunnel.tui.app import InspectorApp
from devtunnel.tui.screens.new_tunnel import NewTunnelScreen
from devtunnel.tui.widgets import FilterBar
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import fill, inspector, make_exchange, traffic


def burst(app: InspectorApp, *keys: str) -> None:
    """Post ``keys`` (characters, or key names such as ``tab``) to the app in one go."""
    for key in keys:
        if len(key) == 1:
            app.post_message(events.Key(key if key.isalnum() else _character_to_key(key), key))
        else:
            app.post_message(events.Key(key, "\t" if key == "tab" else None))


async def test_a_filter_typed_right_after_slash_goes_to_the_filter_bar(tmp_path: Path) -> None:
    """``/method:GET`` in one burst: the letters reached the table before ``/`` had focused the
    bar: ``m`` marked a request, ``d`` asked for a diff, and the filter stayed empty."""
    app = inspector(fill(tmp_path / "captures.db", traffic(12)), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.table
        await async_wait_for(lambda: table.total == 12, what="the list")
        burst(app, *"/method:GET")
        bar = app.query_one(FilterBar)
        try:
            await async_wait_for(lambda: bar.input.value == "method:GET", what="the filter typed")
        except AssertionError as exc:  # late, or gone elsewhere: say where the keys went
            raise AssertionError(f"{exc}: the bar holds {bar.input.value!r}, focus on {app.focused!r}, marked "
                                 f"{table.marked!r}, notices {[n.message for n in app._notifications]!r}, "
                                 f"{app.typed_ahead.held} keys held") from None
        await pilot.pause()
        assert bar.input.value == "method:GET"
        assert table.marked == set() and not app._notifications
        assert app.typed_ahead.held >= 10  # they came faster than they were handled


async def test_a_field_typed_right_after_tab_gets_its_text(tmp_path: Path) -> None:
    """In the new tunnel form, ``18771``, tab, ``payments`` in one burst put ``18771payments`` in
    the target: tab moved the focus after the name's letters had gone to the target."""
    app = inspector(fill(tmp_path / "captures.db", traffic(3)), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(NewTunnelScreen())
        await async_wait_for(lambda: isinstance(app.screen, NewTunnelScreen) and app.focused is not None,
                             what="the form")
        await pilot.pause()
        burst(app, *"18771", "tab", *"payments")
        name = app.screen.query_one("#name", Input)
        await async_wait_for(lambda: name.value == "payments", what="the name typed")
        assert app.screen.query_one("#target", Input).value == "18771"


async def test_held_keys_move_the_cursor_once_each(tmp_path: Path) -> None:
    app = inspector(fill(tmp_path / "captures.db", [make_exchange(n, target=f"/r/{n}") for n in range(400)]), tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.table
        await async_wait_for(lambda: table.total == 400 and table.current_id is not None, what="the list")
        burst(app, *"k" * 150)
        await async_wait_for(lambda: table.cursor == 399 - 150, what="150 rows up")
        burst(app, *"j" * 60)
        await async_wait_for(lambda: table.cursor == 399 - 90, what="60 rows down")
        await async_wait_for(lambda: table.current_id == make_exchange(309).id, what="the row read")
        await pilot.pause()
        assert table.cursor == 309
