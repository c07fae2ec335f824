"""The inspector on a real store: table, follow/pause, filter, marks, help, copy, quitting."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.capture.store import Store
from devtunnel.tui.screens.help import HelpScreen
from devtunnel.tui.widgets import FilterBar, RequestTable, StatsStrip
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import fill, fixed_id, inspector, make_exchange, screen_lines, traffic, utc


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return fill(tmp_path / "captures.db", traffic(12))


async def _loaded(app, count: int) -> RequestTable:  # type: ignore[no-untyped-def]
    table = app.query_one(RequestTable)
    await async_wait_for(lambda: len(table.ids) == count, what=f"{count} ids on the table")
    await async_wait_for(lambda: all(table.cached_row(i) for i in table.ids[-3:]), what="rows loaded")
    return table


async def test_table_lists_stored_requests_oldest_first_with_cursor_on_newest(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _loaded(app, 12)
        await pilot.pause()
        lines = screen_lines(table)
        assert lines[0].split()[:4] == ["TIME", "TUNNEL", "METHOD", "PATH"]
        assert "/" in lines[1] and "12:30:00" in lines[1]
        assert "/health" in lines[12] and "ERR" in lines[12]
        assert table.current_id == fixed_id(11)
        assert table.following


async def test_moving_up_pauses_following_and_f_resumes(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _loaded(app, 12)
        stats = app.query_one(StatsStrip)
        await pilot.press("up")
        assert not table.following and stats.marker == "paused"
        assert table.current_id == fixed_id(10)
        assert "PAUSED" in str(stats.render())
        await pilot.press("f")
        assert table.following and stats.marker == "following"
        assert table.current_id == fixed_id(11)


async def test_new_requests_follow_at_the_bottom_but_not_when_paused(tmp_path: Path) -> None:
    exchanges = traffic(12)
    db = fill(tmp_path / "captures.db", exchanges[:10])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _loaded(app, 10)
        fill(db, exchanges[10:11])
        app.live.changed([fixed_id(10)])
        await async_wait_for(lambda: table.current_id == fixed_id(10), what="cursor follows the new request")
        await pilot.press("up")
        fill(db, exchanges[11:12])
        app.live.changed([fixed_id(11)])
        await async_wait_for(lambda: len(table.ids) == 12, what="the second new request")
        assert table.current_id == fixed_id(9)


async def test_a_request_another_process_stored_shows_with_the_next_announced_one(tmp_path: Path) -> None:
    """``devtunnel replay ID`` in another terminal stores its replay itself: the agent never
    announces it. The next announced request's count said 12, but the table kept 11 rows (the
    replay never appeared, whatever the scrolling) and its last rows blank."""
    exchanges = traffic(12)
    db = fill(tmp_path / "captures.db", exchanges[:10])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _loaded(app, 10)
        fill(db, exchanges[10:11])  # the CLI's replay: stored, not announced
        fill(db, exchanges[11:12])
        app.live.changed([fixed_id(11)])  # the agent's next request
        await async_wait_for(lambda: list(table.ids) == [fixed_id(n) for n in range(12)]
                             and all(table.cached_row(i) for i in table.ids), what="both new rows")
        await pilot.pause()
        lines = screen_lines(table)
        assert "/webhooks/github" in lines[11] and "/health" in lines[12], lines
        assert table.current_id == fixed_id(11)


async def test_under_a_filter_a_row_another_process_ends_into_a_match_shows(tmp_path: Path) -> None:
    """``devtunnel inspect`` with ``status:>=400`` beside an agent it does not follow: a slow
    request stored in flight (no status: no match) that ends in a 504 a few seconds later never
    showed: the store's count did not move, so nothing read the filtered list again."""
    from devtunnel.capture.store import Store

    db = fill(tmp_path / "captures.db", [make_exchange(0, status=200), make_exchange(1, status=500)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.table
        await async_wait_for(lambda: table.total == 2 and table.current_id is not None, what="the list")
        await pilot.press("slash", *"status:>=400", "enter")
        await async_wait_for(lambda: table.total == 1 and table.current_id == make_exchange(1).id, what="the 500")
        writer = Store(db)
        try:
            writer.put(make_exchange(2, status=None, duration=None))  # in flight: not a match yet
            await async_wait_for(lambda: app.live._stored == 3, timeout=15, what="the request in flight counted")
            await async_wait_for(lambda: not table._loading, what="the end of the list read again")
            await pilot.pause()
            assert table.total == 1
            writer.put(make_exchange(2, status=504, duration=30.0))  # ended: the count stays the same
        finally:
            writer.close()
        await async_wait_for(lambda: table.total == 2 and table.current_id == make_exchange(2).id, timeout=15,
                             what="the 504 shown")


async def test_an_empty_filtered_list_shows_the_first_match_another_process_stores(tmp_path: Path) -> None:
    """``status:>=400`` with no error yet: the first 500 another process stored never showed
    (the end of an empty list was never read again).

    The store's first look by the inspector comes with its second's tick: on a quick machine the
    filtered list was read and the 500 stored before it, so that first look took the 500 as the
    store's starting point and nothing ever changed after it. Here the looks are held until the
    500 is stored, whatever the machine's speed."""
    db = fill(tmp_path / "captures.db", [make_exchange(0, status=200)])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.table
        app.live._outside.next_at = math.inf  # no look of the store until the 500 is stored
        await async_wait_for(lambda: table.total == 1 and table.current_id is not None, what="the list")
        await pilot.press("slash", *"status:>=400", "enter")
        await async_wait_for(lambda: table.total == 0 and app.live._sourced == app.live._generation,
                             what="the empty list")
        fill(db, [make_exchange(1, status=500)])
        app.live._outside.next_at = 0.0
        await async_wait_for(lambda: table.total == 1 and table.current_id == make_exchange(1).id, timeout=15,
                             what="the 500 shown")


async def test_a_request_another_process_stored_shows_without_traffic_after_it(tmp_path: Path) -> None:
    """The same with nothing announced after it: the replay showed only in the count, never as a row."""
    exchanges = traffic(12)
    db = fill(tmp_path / "captures.db", exchanges[:10])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _loaded(app, 10)
        fill(db, exchanges[10:12])  # stored by another process; the agent says nothing
        await async_wait_for(lambda: list(table.ids) == [fixed_id(n) for n in range(12)]
                             and all(table.cached_row(i) for i in table.ids), what="the rows stored elsewhere")
        await pilot.pause()
        assert "/health" in screen_lines(table)[12]
        assert table.current_id == fixed_id(11)


async def test_requests_retention_removed_leave_the_table_when_new_ones_come(tmp_path: Path) -> None:
    """An agent's store at its limit removes its oldest exchanges as it records new ones, and
    announces only the new ones. The table kept the removed rows (it never counted fewer rows
    than its window held): with large bodies filling a store of 150 MB, the inspector showed
    284 requests, the oldest gone from the store, while the store held 51."""
    exchanges = traffic(12)
    db = fill(tmp_path / "captures.db", exchanges[:10])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _loaded(app, 10)
        writer = Store(db, max_exchanges=5)  # the agent's, with store.max_exchanges = 5
        writer.put_many(exchanges[10:12])
        writer.close()
        app.live.changed([fixed_id(10), fixed_id(11)])
        kept = [fixed_id(n) for n in range(7, 12)]
        await async_wait_for(lambda: list(table.ids) == kept and all(table.cached_row(i) for i in table.ids),
                             what="the five rows the store kept, and no other")
        await pilot.pause()
        assert table.total == 5 and app.query_one(StatsStrip).shown == 5
        assert table.current_id == fixed_id(11)


async def test_filter_applies_as_typed_and_error_keeps_last_result(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _loaded(app, 12)
        await pilot.press("slash", *"method:POST")
        await async_wait_for(lambda: len(table.ids) == 3, what="POST requests only")
        bar = app.query_one(FilterBar)
        await pilot.press(*" status:>=abc")
        await async_wait_for(lambda: bar.error is not None, what="the error")
        message = str(app.query_one("#filter-error").render())
        assert "status expects a number" in message and "column 20" in message
        assert bar.has_class("-invalid")
        assert len(table.ids) == 3  # the last valid result stays
        await pilot.press("escape")
        await async_wait_for(lambda: len(table.ids) == 12, what="every request again")
        assert bar.input.value == "" and bar.error is None and table.has_focus


async def test_a_filter_error_in_the_bar_quotes_a_bounded_part_of_a_pasted_expression(db: Path, tmp_path: Path) -> None:
    # The bar showed the whole unknown code of a pasted 10 KB filter in its message.
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 12)
        await pilot.press("slash")
        bar = app.query_one(FilterBar)
        bar.input.value = "~zz" + "a" * 10_000  # as pasted
        await async_wait_for(lambda: bar.error is not None, what="the error")
        message = str(app.query_one("#filter-error").render())
        assert "unknown filter ~zz" in message and "\u2026" in message and "(column 1)" in message, message[:300]
        assert len(message) < 400, message[:300]


async def test_a_filter_regex_that_backtracks_is_stopped_said_and_shows_no_rows(tmp_path: Path) -> None:
    # With re, the search ran for ever in a reader thread holding the GIL: the inspector froze.
    db = fill(tmp_path / "captures.db", [*traffic(12), make_exchange(12, method="POST", body=b"a" * 5000 + b"!")])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _loaded(app, 13)
        await pilot.press("slash", *'~b "(a|a)+$"')
        await async_wait_for(lambda: app._notifications, timeout=15, what="the notice")
        notice = list(app._notifications)[-1]
        assert notice.title == "Filter stopped" and notice.severity == "error"
        assert notice.message.startswith("filter regex took too long: '(?s)(a|a)+$'")
        assert len(table.ids) == 0
        await pilot.press("escape")
        await async_wait_for(lambda: len(table.ids) == 13, what="every request again")


async def test_a_stopped_filter_regex_is_escaped_once_in_the_notice(tmp_path: Path) -> None:
    db = fill(tmp_path / "captures.db", [*traffic(2), make_exchange(2, method="POST", body=b"a" * 5000 + b"!")])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 3)
        await pilot.press("slash")
        app.query_one(FilterBar).input.value = '~b "(?:\x1b]0;\u202e)?(a|a)+$"'  # as pasted
        await async_wait_for(lambda: app._notifications, timeout=15, what="the notice")
        notice = list(app._notifications)[-1]
        assert notice.message.startswith("filter regex took too long: '(?s)(?:\\x1b]0;\\u202e)?(a|a)+$'")


async def test_enter_remembers_filter_and_up_down_recall_it_across_runs(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 12)
        await pilot.press("slash", *"status:4xx", "enter")
        await pilot.press("slash", "ctrl+u", *"method:GET", "enter")
    assert (tmp_path / "filter_history").read_text().splitlines() == ["status:4xx", "method:GET"]

    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 12)
        bar = app.query_one(FilterBar)
        await pilot.press("slash", "up")
        assert bar.input.value == "method:GET"
        await pilot.press("up")
        assert bar.input.value == "status:4xx"
        await pilot.press("down", "down")
        assert bar.input.value == ""


async def test_broken_history_file_starts_history_afresh(db: Path, tmp_path: Path) -> None:
    (tmp_path / "filter_history").write_bytes(b"\xff\xfe\x00garbage")
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 12)
        await pilot.press("slash", "up")
        assert app.query_one(FilterBar).input.value == ""


async def test_mark_shows_a_star_and_d_without_a_pair_explains(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _loaded(app, 12)
        await pilot.press("d")
        await async_wait_for(lambda: app._notifications, what="a hint")
        assert "Mark a request" in list(app._notifications)[-1].message
        await pilot.press("m")
        assert table.marked == {fixed_id(11)}
        assert screen_lines(table)[12].startswith("* ")
        await pilot.press("m")
        assert table.marked == set()


async def test_help_lists_every_key_and_the_filter_language(db: Path, tmp_path: Path) -> None:
    from devtunnel.capture.filters import FILTER_HELP

    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 12)
        await pilot.press("question_mark")
        await async_wait_for(lambda: isinstance(app.screen, HelpScreen), what="help")
        text = "\n".join(str(s.render()) for s in app.screen.query("Static, KeyTable"))
        for description in ("Replay", "Diff marked", "Diff replay", "Copy curl", "Export", "Mark",
                            "Follow", "New tunnel", "Stop tunnel", "Copy URL", "Older filter", "Clear filter"):
            assert description in text
        for syntax, _ in FILTER_HELP:
            assert syntax in text
        # Keys of the other screens docs/inspector.md names, and the ones Textual binds everywhere.
        for row in ("tab  Move between the tunnels panel, the filter and the table", "ctrl+p  Command palette",
                    "tab  To the headers", "ctrl+s  Send", "ctrl+n  Add a header row", "ctrl+r  Remove the header row",
                    "ctrl+o  send a webhook's captured signature", "ctrl+d  Diff", "ctrl+s  Export"):
            assert " ".join(row.split()) in " ".join(text.split()), row
        # Each mark once: the replay marks come from capture.outcome, not again from the legend.
        legend = text.split("Marks in the request table", 1)[1].split("Filter language", 1)[0]
        marks = [line.split()[0] for line in legend.splitlines() if line.strip()]
        assert len(marks) == len(set(marks)), marks
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_every_key_action_is_in_the_command_palette(db: Path, tmp_path: Path) -> None:
    from devtunnel.tui.backend import TunnelView
    from devtunnel.tui.widgets import TunnelsPanel

    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)):
        await _loaded(app, 12)
        panel = app.query_one(TunnelsPanel)
        assert "Stop tunnel" not in {command.title for command in app.get_system_commands(app.screen)}  # no tunnel
        shop = TunnelView("shop", "http://shop.localhost:8000", "http://127.0.0.1:3000", "online")
        panel.update_tunnels([shop])
        titles = {command.title for command in app.get_system_commands(app.screen)}
        # A stopped tunnel is started (by s or R: offered once), not stopped or restarted.
        panel.update_tunnels([TunnelView("shop", "http://shop.localhost:8000", "http://127.0.0.1:3000", "stopped")])
        stopped = [command.title for command in app.get_system_commands(app.screen)]
    for wanted in ("Filter", "New tunnel", "Replay", "Edit+replay", "Diff marked", "Diff replay",
                   "Copy curl", "Export", "Help", "Follow", "Detail", "Mark", "Stop tunnel", "Restart tunnel",
                   "Copy URL"):
        assert wanted in titles
    assert "Start a stopped tunnel again" not in titles
    assert stopped.count("Start a stopped tunnel again") == 1
    assert "Stop tunnel" not in stopped and "Restart tunnel" not in stopped


async def test_copy_as_curl_without_a_clipboard_says_where_it_went(db: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 12)
        await pilot.press("c")
        await async_wait_for(lambda: app._notifications, what="the copy notice")
        notice = list(app._notifications)[-1]
        assert notice.title == "Sent curl command to the terminal"
        assert notice.message.startswith("Sent ") and "terminal's clipboard (OSC 52)" in notice.message
        assert app.clipboard.startswith("curl") and "/health" in app.clipboard


async def test_new_tunnel_without_an_agent_says_none_is_running(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 12)
        await pilot.press("n")
        await async_wait_for(lambda: app._notifications, what="the notice")
        assert "No agent is running" in list(app._notifications)[-1].message


async def test_missing_database_opens_empty_and_quits_with_q(tmp_path: Path) -> None:
    app = inspector(tmp_path / "nothing-here.db", tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(RequestTable)
        await app.live.loaded.wait()
        assert list(table.ids) == [] and table.current_id is None
        await pilot.press("enter", "m", "up", "f")
        await pilot.press("q")
        await async_wait_for(lambda: not app.is_running, what="the app to exit")
    assert not (tmp_path / "nothing-here.db").exists()


async def test_ctrl_c_quits_even_from_the_filter_input(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 12)
        await pilot.press("slash", "x", "ctrl+c")
        await async_wait_for(lambda: not app.is_running, what="the app to exit")


async def test_a_palette_command_runs_its_action(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _loaded(app, 12)
        commands = {command.title: command for command in app.get_system_commands(app.screen)}
        await pilot.press("up", "up")
        await commands["Mark"].callback()
        assert table.marked == {fixed_id(9)}
        await commands["Follow"].callback()
        assert table.following and table.current_id == fixed_id(11)


async def test_table_keys_are_off_while_another_screen_is_on_top(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 12)
        await pilot.press("enter")
        await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="the detail screen")
        # The detail screen keeps the keys about its exchange; the table's own keys are off.
        assert all(app.check_action(a, ()) is True for a in ("replay", "edit", "diff_original", "copy_curl", "export",
                                                             "help"))
        assert not any(app.check_action(a, ()) for a in ("focus_filter", "diff", "new_tunnel"))
        await pilot.press("slash", "d")
        assert not app.query_one(FilterBar).input.has_focus
        assert type(app.screen).__name__ == "DetailScreen"
        await pilot.press("question_mark")
        await async_wait_for(lambda: isinstance(app.screen, HelpScreen), what="help")
        assert app.check_action("replay", ()) is False and app.check_action("copy_curl", ()) is False
        await pilot.press("c")
        assert not any("curl command" in n.title for n in app._notifications)


def _dialog(name: str, app):  # type: ignore[no-untyped-def]
    """A dialog opened over the detail screen of the app's current exchange."""
    from devtunnel.tui.screens.drill import DrillScreen
    from devtunnel.tui.screens.export import ExportScreen
    from devtunnel.tui.screens.new_tunnel import NewTunnelScreen
    from devtunnel.tui.screens.send import SendSampleScreen

    exchange = app.screen.exchange
    return {"export": lambda: ExportScreen([exchange]), "help": lambda: HelpScreen([], []),
            "drill": lambda: DrillScreen(exchange), "send": lambda: SendSampleScreen(environ={}),
            "new tunnel": NewTunnelScreen}[name]()


@pytest.mark.parametrize("dialog", ["export", "help", "drill", "send", "new tunnel"])
async def test_the_key_bar_over_a_dialog_lists_the_dialogs_keys(db: Path, tmp_path: Path, dialog: str) -> None:
    from tests.tui.screen_fixtures import screen_text

    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 12)
        await pilot.press("enter")
        await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="the detail screen")
        # The footer recomposes after a refresh (Footer.bindings_changed): wait for its keys drawn.
        await async_wait_for(lambda: "p Raw" in screen_text(app).splitlines()[-1], what="the detail's key bar")
        screen = _dialog(dialog, app)
        await app.push_screen(screen)
        await async_wait_for(lambda: app.screen is screen, what=dialog)
        shown = [b for b in screen.BINDINGS if b.show]  # type: ignore[union-attr]
        assert shown
        await async_wait_for(lambda: all(b.description in screen_text(app).splitlines()[-1] for b in shown),  # type: ignore[union-attr]
                             what=f"the {dialog}'s key bar")
        bar = screen_text(app).splitlines()[-1]
        assert not any(word in bar for word in ("Raw", "Hex", "Replay", "Help")), bar


def _footer(app) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The footer's keys wholly on screen, as ``{key: description}``."""
    from textual.widgets._footer import FooterKey

    width = app.size.width
    return {key.key_display: key.description for key in app.screen.query(FooterKey)
            if key.region.width and key.region.right <= width}


@pytest.mark.parametrize("focus", ["table", "tunnels", "filter"])
async def test_footer_shows_help_and_quit_at_80x24_wherever_they_work(db: Path, tmp_path: Path, focus: str) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(80, 24)):
        await _loaded(app, 12)
        if focus == "tunnels":
            app.query_one("#tunnels").focus()
        elif focus == "filter":
            app.query_one(FilterBar).focus_input()
        # The footer recomposes after the focus moves: wait for it to show the focused part's keys.
        expected = "esc" if focus == "filter" else "?"
        await async_wait_for(lambda: expected in _footer(app), what=f"the footer for the {focus}")
        shown = _footer(app)
        if focus == "filter":  # typing goes to the input: ? and q are letters there
            assert shown.get("esc") == "Clear filter" and "?" not in shown and "q" not in shown, shown
            return
        assert shown.get("?") == "Help" and shown.get("q") == "Quit", shown
        if focus == "table":
            assert {"⏎", "/", "r", "d", "m"} <= shown.keys()


async def test_detail_footer_shows_its_keys_and_help_at_80x24(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _loaded(app, 12)
        await pilot.press("enter")
        await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="the detail")
        expected = {"esc": "Close", "r": "Replay", "e": "Edit", "c": "Curl", "x": "Export", "p": "Raw", "h": "Hex",
                    "?": "Help"}
        # The footer recomposes after a refresh (Footer.bindings_changed): wait for the detail's keys.
        await async_wait_for(lambda: all(_footer(app).get(key) == d for key, d in expected.items()),
                             what="the detail's keys in the footer")
        shown = _footer(app)
        for key, description in expected.items():
            assert shown.get(key) == description, shown


async def test_command_palette_writes_keys_as_people_do(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)):
        await _loaded(app, 12)
        helps = {command.title: command.help for command in app.get_system_commands(app.screen)}
    assert helps["Help"] == "key: ?"
    assert helps["Filter"] == "key: /"
    assert helps["Follow"] == "key: end / G / f"
    assert helps["Detail"] == "key: ⏎"
    assert not any("question_mark" in h or "slash" in h for h in helps.values())


async def test_empty_filter_reads_as_a_hint_and_an_active_one_stands_out(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 12)
        bar = app.query_one(FilterBar)
        await pilot.pause()

        def first_cell() -> tuple[str, object]:
            segment = next(s for s in bar.input.render_line(0) if s.text.strip())
            return segment.text, segment.style

        text, hint_style = first_cell()
        assert text.startswith("filter: method:POST") and not bar.has_class("-active")
        assert hint_style.italic and "/ to focus, ? for help" in bar.input.placeholder  # type: ignore[attr-defined]
        await pilot.press("slash", *"status:>=400", "enter")
        await async_wait_for(lambda: bar.expression == "status:>=400", what="the filter applied")
        await pilot.pause()
        text, active_style = first_cell()
        assert text.startswith("status:>=400") and bar.has_class("-active")
        assert active_style.bold and not active_style.italic  # type: ignore[attr-defined]
        assert active_style.bgcolor != hint_style.bgcolor  # type: ignore[attr-defined]
        await pilot.press("slash", "escape")
        await async_wait_for(lambda: not bar.has_class("-active"), what="the filter cleared")


async def test_command_palette_at_80x24_shows_keys_as_people_write_them(db: Path, tmp_path: Path) -> None:
    from tests.tui.screen_fixtures import screen_text

    app = inspector(db, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _loaded(app, 12)
        await pilot.press("ctrl+p")
        await async_wait_for(lambda: type(app.screen).__name__ == "CommandPalette", what="the palette")
        await pilot.press(*"help")
        await async_wait_for(lambda: "key: ?" in screen_text(app), what="the help command and its key")
        assert "question_mark" not in screen_text(app)


async def test_an_action_failing_unexpectedly_is_said_and_the_inspector_goes_on(db: Path, tmp_path: Path) -> None:
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await _loaded(app, 12)

        async def broken(exchange_id: str) -> None:
            raise RuntimeError("the \x1b[2Jstore \x1b]52;c;eA==\x07 fell over")

        app.backend.get = broken  # type: ignore[method-assign]
        await pilot.press("enter")  # open the detail: reading the exchange fails
        await async_wait_for(lambda: app._notifications, what="the error notice")
        notice = list(app._notifications)[-1]
        assert notice.title == "Unexpected error" and notice.severity == "error"
        assert "RuntimeError: the" in notice.message and "fell over" in notice.message
        assert "\x1b" not in notice.message and "\x07" not in notice.message
        assert app.is_running and app.screen.query_one(RequestTable) is table
        await pilot.press("down")  # still answering keys
        assert table.current_id is not None


async def test_status_counts_read_as_not_counted_yet_until_they_are() -> None:
    """A large store is counted by status class a moment after it opens: until then the strip
    said ``2xx 0  3xx 0 ... err 0`` beside ``100,000 shown``, as if none had an answer."""
    from textual.app import App, ComposeResult

    class Strip(App[None]):
        def compose(self) -> ComposeResult:
            yield StatsStrip()

    app = Strip()
    async with app.run_test(size=(120, 3)) as pilot:
        stats = app.query_one(StatsStrip)
        stats.shown = 100_000
        await pilot.pause()
        line = str(stats.render())
        assert "2xx …" in line and "err …" in line and " 0" not in line.split("/s", 1)[1], line
        stats.set_mix({"2xx": 7, "3xx": 0, "4xx": 2, "5xx": 1, "errors": 0})
        await pilot.pause()
        assert str(stats.render()).endswith("2xx 7  3xx 0  4xx 2  5xx 1  err 0")


async def test_a_opens_no_drill_over_another_screen(db: Path, tmp_path: Path) -> None:
    """``a`` (drill) is a key of the table: pressed in the edit form with the cursor on a button,
    or in the diff, it opened the drill of the table's request over that screen."""
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await _loaded(app, 12)
        await pilot.press("enter")
        await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="the detail screen")
        assert not app.check_action("drill", ())
        await pilot.press("a")
        await pilot.pause()
        assert type(app.screen).__name__ == "DetailScreen"
        await pilot.press("question_mark")
        await async_wait_for(lambda: isinstance(app.screen, HelpScreen), what="help")
        assert not app.check_action("drill", ())


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files in /proc")
async def test_the_inspector_leaves_no_reader_thread_or_database_connection_behind(db: Path, tmp_path: Path) -> None:
    """Closed without ``q`` (a crash, a program that embeds it), the inspector still ends its
    store readers: each was a thread holding a connection to the database, and they piled up."""
    import os
    import threading

    def readers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("store-reader-")}

    def open_files() -> int:
        return sum(1 for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(db)))

    before, files_before = readers(), open_files()
    app = inspector(db, tmp_path)
    async with app.run_test(size=(100, 30)):
        await _loaded(app, 12)
        assert readers() - before
        assert open_files() > files_before
    await async_wait_for(lambda: not readers() - before, what="the reader threads to end")
    await async_wait_for(lambda: open_files() == files_before, what="the connections to the database to close")


async def test_messages_still_queued_as_the_app_closes_are_dropped_not_raised(tmp_path: Path) -> None:
    """Closed without q (a program embedding it, a test's end), Textual takes the screens down
    before it handles what is still queued, then unmounts the app: a tunnel's change from the
    agent's events, the agent's status, a tick or the table's follow state found no panel, and
    the app ended with NoMatches."""
    from devtunnel.tui.backend import TunnelView
    from devtunnel.tui.messages import AgentChanged, TunnelChanged
    from devtunnel.tui.supervisor import AgentStatus
    from devtunnel.tui.widgets import TunnelsPanel

    app = inspector(fill(tmp_path / "captures.db", traffic(3)), tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: table.ids and table.cached_row(table.ids[-1]), what="rows")
        for kind in (TunnelsPanel, StatsStrip):
            await app.query_one(kind).remove()  # as the closing app's screens are taken down
        app.post_message(TunnelChanged(TunnelView("web", "https://web.example.com", "http://127.0.0.1:1", "online")))
        app.post_message(AgentChanged(AgentStatus("running", api_url=None)))
        app.post_message(RequestTable.FollowChanged(table, False))
        app._tick()
        await pilot.pause()
        assert app.is_running
