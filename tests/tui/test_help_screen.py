"""The help screen: a key bound twice (one binding on while the other is off) is one row, and a
description too long for the width goes on under itself, not at the screen's left edge."""

from __future__ import annotations

from devtunnel.capture.filters import FILTER_HELP
from devtunnel.tui.screens.detail import DetailScreen
from devtunnel.tui.screens.help import HelpScreen, KeyTable, key_rows
from devtunnel.tui.widgets import TunnelsPanel
from tests.helpers import async_wait_for
from tests.tui.screen_fixtures import ScreenApp


def test_a_key_with_two_bindings_is_one_row_saying_both() -> None:
    rows = dict(key_rows(DetailScreen.BINDINGS))
    assert [keys for keys, _ in key_rows(DetailScreen.BINDINGS)].count("p") == 1
    assert rows["p"] == "Bodies as received / Bodies pretty-printed"
    tunnel_keys = [keys for keys, _ in key_rows(TunnelsPanel.BINDINGS)]
    assert len(tunnel_keys) == len(set(tunnel_keys)), tunnel_keys


def _lines(table: KeyTable) -> list[str]:
    return [strip.text.rstrip() for strip in table.render_lines(table.region.reset_offset)]


async def test_help_at_80x24_lists_p_once_and_wraps_under_the_description() -> None:
    sections = [("Request detail", [*DetailScreen.BINDINGS, *DetailScreen.HELP_ONLY_KEYS])]
    app = ScreenApp(HelpScreen(sections, FILTER_HELP))
    async with app.run_test(size=(80, 24)) as pilot:
        await async_wait_for(lambda: bool(app.screen.query(KeyTable)), what="the help screen")
        await pilot.pause()
        detail, filters = app.screen.query(KeyTable)
        keys = [line.split()[0] for line in _lines(detail) if line[:3].strip()]
        assert keys.count("p") == 1, keys
        lines = _lines(filters)
        assert len(lines) > len(FILTER_HELP), "no description wrapped at 80 columns"
        column = 2 + min(KeyTable.KEY_WIDTH, max(len(syntax) for syntax, _ in FILTER_HELP)) + 2
        continued = [line for line in lines if line and not line[:column].strip()]
        assert continued
        for line in continued:  # under the description, not at the left edge
            assert len(line) - len(line.lstrip()) == column, line
        # A key past the column is a line of its own: its description is not squeezed into the
        # few cells it leaves (a word a line).
        status = next(i for i, line in enumerate(lines) if "status:>=400" in line)
        assert lines[status + 1].strip().startswith("response status: number, class,"), lines[status:status + 3]
        assert isinstance(app.screen, HelpScreen)
