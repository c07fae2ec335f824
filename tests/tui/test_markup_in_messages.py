"""Text not written by us is shown as the text it is, never read as Textual markup.

Errors quote what a user typed (a filter), what a relay or the local service said (a refusal
reason, a reason phrase) and paths; in a notification or on a screen, ``[@click=app.quit]`` must
not become an action, ``[bold]x[/]`` must not vanish into a style, and an unbalanced ``[/foo]``
must not raise MarkupError. Each case drives the inspector with Pilot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.content import Content
from textual.widgets import Input, Static

from devtunnel.tui.app import InspectorApp
from devtunnel.tui.backend import Backend, TunnelView
from devtunnel.tui.screens import ExportScreen
from devtunnel.tui.widgets import RequestTable, TunnelsPanel
from devtunnel.values.terminal import escape
from tests.helpers import async_wait_for
from tests.kit.servers import Received, Reply, http_server
from tests.tui.app_fixtures import fill, inspector, make_exchange, traffic, utc
from tests.tui.screen_fixtures import laid_out

MARKUP = ["[@click=app.quit]q", "[bold]x[/]", "[/foo]", "\x1b[31mred"]
"""An action, a style, an unbalanced closing tag, and a terminal escape for good measure."""


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


def _shown(visual: object) -> Content:
    """What a notification, a Static or a Label draws (as Textual makes it from its content)."""
    if isinstance(visual, Content):
        return visual
    from rich.text import Text

    if isinstance(visual, Text):
        return Content.from_rich_text(visual)
    return Content.from_markup(str(visual))


def _literal(shown: Content, text: str) -> None:
    """``text`` is in ``shown`` as it is (a control character as its visible escape), and nothing
    in ``shown`` acts or links."""
    expected = text.replace("\x1b", "\\x1b")
    assert expected in shown.plain, (expected, shown.plain)
    assert "\x1b" not in shown.plain
    assert not any("@click" in str(span.style) or "link" in str(span.style) for span in shown.spans), shown.spans


def _notice(app: InspectorApp, title: str) -> Content:
    notification = [n for n in app._notifications if n.title == title][-1]
    return Content.from_markup(notification.message) if notification.markup else Content(notification.message)


async def _ready(app: InspectorApp) -> RequestTable:
    table = app.query_one(RequestTable)
    await async_wait_for(lambda: table.ids and table.cached_row(table.ids[-1]), what="rows")
    return table


@pytest.mark.parametrize("text", MARKUP)
async def test_a_filter_error_quoting_the_filter_shows_it_literally(tmp_path: Path, text: str) -> None:
    app = inspector(fill(tmp_path / "captures.db", traffic(3)), tmp_path)
    async with app.run_test(size=(200, 30)) as pilot:
        await _ready(app)
        await pilot.press("slash")
        app.query_one("#filter-input", Input).value = f"zz:{text}"  # as typed (a key cannot carry ESC)
        await async_wait_for(lambda: "unknown field" in str(app.query_one("#filter-error", Static).render()),
                             what="the error")
        _literal(_shown(app.query_one("#filter-error", Static).render()), f'"zz:{text}"')
        assert app.is_running


@pytest.mark.parametrize("text", MARKUP)
async def test_a_replay_answered_with_such_a_reason_says_it_literally(tmp_path: Path, text: str) -> None:
    def answer(request: Received) -> Reply:
        return Reply(503, reason=f"Down {text}".replace("\x1b", "~"))  # an ESC cannot go on a status line

    with http_server(answer) as server:
        ex = make_exchange(1, target_url=server.url)
        app = inspector(fill(tmp_path / "captures.db", [ex]), tmp_path)
        async with app.run_test(size=(200, 30)) as pilot:
            await _ready(app)
            await pilot.press("r")
            await async_wait_for(lambda: any(n.title == "Replayed" for n in app._notifications), what="the replay")
            _literal(_notice(app, "Replayed"), f"Down {text}".replace("\x1b", "~"))
            assert app.is_running


@pytest.mark.parametrize("text", MARKUP)
async def test_a_relay_refusal_reason_shows_literally_in_the_notice_and_the_tunnels_panel(
        tmp_path: Path, text: str) -> None:
    """The agent API passes on what the relay said (a GOAWAY reason, a refusal) as the error."""
    def agent_api(request: Received) -> Reply:
        if request.method == "POST":
            return Reply.json({"msg": f"the relay refused the tunnel: {text}"}, status=502)
        return Reply.json({"tunnels": []})

    with http_server(agent_api) as server:
        app = InspectorApp(Backend(tmp_path / "captures.db", api_url=server.url), history_path=tmp_path / "history")
        async with app.run_test(size=(200, 30)) as pilot:
            app.run_worker(app._start_tunnel(_request("3000")), exit_on_error=False)
            await async_wait_for(lambda: any(n.title == "Tunnel not started" for n in app._notifications),
                                 what="the notice")
            _literal(_notice(app, "Tunnel not started"), f"the relay refused the tunnel: {text}")
            # The inspector polls the agent's tunnels every 2 s and replaces the panel's lines with
            # that list (empty here): stop the poll, so the line set below is the one on screen.
            app.backend.api_url = None
            app.workers.cancel_group(app, "poll")
            await pilot.pause()
            panel = app.query_one(TunnelsPanel)
            panel.update_tunnels([TunnelView("shop", "", "http://127.0.0.1:3000", "failed", error=f"GOAWAY: {text}")])
            await pilot.pause()
            _literal(_shown(panel.render()), f"GOAWAY: {text}")
            assert app.is_running


async def test_a_refusal_the_agent_api_escaped_shows_escaped_once_in_the_notice_and_the_tunnels_panel(
        tmp_path: Path) -> None:
    """The agent API gives a tunnel's error, and a tunnel error's ``msg``, escaped as its log line
    reads (they may quote a relay): the inspector shows that text as it is, never escaping its
    backslashes again (an ESC the relay sent reads ``\\x1b``, not ``\\\\x1b``)."""
    said = "bad token \x1b]0;owned\x07 in C:\\relay"
    escaped = escape(said)  # what the API sends: the ESC as \x1b, the backslash doubled
    assert escaped == "bad token \\x1b]0;owned\\x07 in C:\\\\relay"

    def agent_api(request: Received) -> Reply:
        if request.method == "POST":
            return Reply.json({"msg": f"the relay refused the token: {escaped}"}, status=502)
        return Reply.json({"tunnels": []})

    with http_server(agent_api) as server:
        app = InspectorApp(Backend(tmp_path / "captures.db", api_url=server.url), history_path=tmp_path / "history")
        async with app.run_test(size=(200, 30)) as pilot:
            app.run_worker(app._start_tunnel(_request("3000")), exit_on_error=False)
            await async_wait_for(lambda: any(n.title == "Tunnel not started" for n in app._notifications),
                                 what="the notice")
            assert f"the relay refused the token: {escaped}" in _notice(app, "Tunnel not started").plain
            app.backend.api_url = None  # (the 2 s poll would replace the panel's lines: see the test above)
            app.workers.cancel_group(app, "poll")
            await pilot.pause()
            panel = app.query_one(TunnelsPanel)
            panel.update_tunnels([TunnelView("shop", "", "http://127.0.0.1:3000", "failed", error=escaped)])
            await pilot.pause()
            shown = _shown(panel.render()).plain
            assert f"failed: {escaped}" in shown, shown
            assert "\\\\x1b" not in shown and "\x1b" not in shown
            assert app.is_running


def _request(target: str):  # type: ignore[no-untyped-def]
    from devtunnel.tui.screens.new_tunnel import TunnelRequest

    return TunnelRequest(target)


@pytest.mark.parametrize("text", MARKUP)
async def test_an_export_path_shows_literally_in_the_error_and_the_notice(tmp_path: Path, text: str) -> None:
    app = inspector(fill(tmp_path / "captures.db", traffic(3)), tmp_path)
    async with app.run_test(size=(200, 40)) as pilot:
        await _ready(app)
        await pilot.press("x")
        await async_wait_for(lambda: isinstance(app.screen, ExportScreen) and laid_out(app, "#to-file"),
                             what="the export screen, laid out")
        await pilot.click("#to-file")
        await pilot.pause()
        path = app.screen.query_one("#path", Input)
        path.value = str(tmp_path / text / "out.har")  # a folder that is not there
        await pilot.press("ctrl+s")
        message = app.screen.query_one("#export-message", Static)
        await async_wait_for(lambda: "no such folder" in str(message.render()), what="the error")
        _literal(_shown(message.render()), f"{tmp_path / text}")
        (tmp_path / text).mkdir(parents=True)
        path.value = str(tmp_path / text / "out.har")
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: any(n.title == "Export" for n in app._notifications), what="the notice")
        _literal(_notice(app, "Export"), str(tmp_path / text / "out.har"))
        assert (tmp_path / text / "out.har").is_file() and app.is_running
