"""The app a tunnel runs, in the inspector: its state in the tunnels panel, the Logs view (l), and
the app stopped when the inspector quits. With a real agent child running a real app, then
snapshots of the panel and the view with frozen data."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from textual.widgets import RichLog, Static

from devtunnel.errors import TunnelError
from devtunnel.tui.backend import LogBatch, TunnelView
from devtunnel.tui.screens.logs import LogsScreen
from devtunnel.tui.supervisor import AgentStatus, agent_command
from devtunnel.tui.widgets import RequestTable, StatsStrip, TunnelsPanel
from tests.helpers import async_wait_for, free_port, process_alive, wait_for
from tests.tui.app_fixtures import cursor_in_view, fill, inspector, traffic, utc

APP = Path(__file__).parent.parent / "net" / "app_fixture.py"


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()



def _log_text(screen: LogsScreen) -> str:
    return "\n".join(strip.text for strip in screen.query_one(RichLog).lines)


@pytest.mark.timeout(90)
async def test_the_logs_view_shows_the_apps_output_escaped_and_searches_it(tmp_path: Path) -> None:
    db = tmp_path / "captures.db"
    port = free_port()
    argv = agent_command("http", str(port), "--run", f"{sys.executable} {APP} {port}", "--name", "shop",
                         "--no-tui", "--api-port", str(free_port()), "--db", str(db))
    app = inspector(db, tmp_path, agent_argv=argv, agent_log=tmp_path / "agent.log")
    async with app.run_test(size=(110, 30)) as pilot:
        panel = app.query_one(TunnelsPanel)
        await async_wait_for(lambda: panel.tunnels.get("shop") is not None and panel.tunnels["shop"].app_state == "ready",
                             timeout=40, what="the app ready in the panel")
        assert "app ready" in str(panel.render())
        panel.focus()
        await pilot.press("l")
        await async_wait_for(lambda: isinstance(app.screen, LogsScreen), what="the Logs view")
        screen = app.screen
        assert isinstance(screen, LogsScreen)
        await async_wait_for(lambda: "listening on" in _log_text(screen), timeout=10, what="the app's first line")
        text = _log_text(screen)
        assert "\\x1b]0;pwned" in text and "\x1b" not in text
        assert "started app (pid" in text
        async with httpx.AsyncClient(timeout=5) as client:  # the app prints a line per request
            await client.get(f"http://127.0.0.1:{port}/followed")
        await async_wait_for(lambda: "served /followed #1" in _log_text(screen), timeout=10,
                             what="a new line of the app, streamed")

        await pilot.press("slash", *"PWNED", "enter")
        await async_wait_for(lambda: screen.search == "PWNED" and len(screen.lines) == 1, what="the search applied")
        assert "started app" not in _log_text(screen)
        await pilot.press("escape")  # closes the view
        await async_wait_for(lambda: not isinstance(app.screen, LogsScreen), what="the view closed")
        [app_pid] = await _app_pids(app)
        assert process_alive(app_pid)
        await app.shutdown()  # what q does: the agent stops, and its app with it
    wait_for(lambda: not process_alive(app_pid), what="the app stopped with the inspector")


async def _app_pids(app: Any) -> list[int]:
    async with httpx.AsyncClient(timeout=5) as client:
        tunnels = (await client.get(app.backend.api_url + "/api/tunnels")).json()["tunnels"]
    return [t["app"]["pid"] for t in tunnels]


async def test_l_on_a_tunnel_without_app_says_how_to_get_one(tmp_path: Path) -> None:
    app = inspector(fill(tmp_path / "captures.db", traffic(3)), tmp_path)
    async with app.run_test(size=(100, 24)) as pilot:
        panel = app.query_one(TunnelsPanel)
        panel.update_tunnels([TunnelView("shop", "http://shop.localhost:8000", "http://127.0.0.1:3000", "online")])
        panel.focus()
        await pilot.press("l")
        await pilot.pause()
        assert not isinstance(app.screen, LogsScreen)
        assert any("runs no app" in str(n.message) for n in app._notifications)


# -- snapshots ------------------------------------------------------------------------------------------

T0 = 1767225600.0  # 2026-01-01 00:00:00 UTC

LINES: list[dict[str, Any]] = [
    {"time": T0, "stream": "devtunnel", "text": "started app (pid 4242)"},
    {"time": T0 + 1, "stream": "err", "text": "INFO:     Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)"},
    {"time": T0 + 2, "stream": "out", "text": "served /webhooks/stripe #1"},
    {"time": T0 + 3, "stream": "out", "text": "hostile \x1b]0;pwned\x07\x1b[2J line"},
    {"time": T0 + 4, "stream": "err", "text": "Traceback (most recent call last):"},
    {"time": T0 + 4, "stream": "err", "text": "  File \"app.py\", line 12, in handler"},
    {"time": T0 + 4, "stream": "err", "text": "KeyError: 'signature'"},
    {"time": T0 + 5, "stream": "devtunnel", "text": "app exited with code 1"},
    {"time": T0 + 6, "stream": "devtunnel", "text": "started app (pid 4250)"},
    {"time": T0 + 7, "stream": "out", "text": "served /webhooks/stripe #1"},
]


async def _fixed(search: str) -> AsyncIterator[LogBatch]:
    yield LogBatch([line for line in LINES if search.lower() in line["text"].lower()])
    await asyncio.Event().wait()  # following: nothing more comes


def _base(tmp_path: Path):  # type: ignore[no-untyped-def]
    return inspector(fill(tmp_path / "captures.db", traffic(12)), tmp_path)


async def _settle(pilot, held: int = 0) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    await async_wait_for(lambda: len(app.query_one(RequestTable).ids) == 12, what="ids")
    await async_wait_for(lambda: sum(app.query_one(StatsStrip).status_mix.values()) == 12, what="status mix")
    panel = app.query_one(TunnelsPanel)
    panel.set_agent(AgentStatus("running", pid=1, api_url="http://127.0.0.1:4040"))
    panel.update_tunnels([
        TunnelView("payments", "http://payments.localhost:8000", "http://127.0.0.1:8000", "online", requests=9,
                   app_state="ready"),
        TunnelView("shop", "http://shop.localhost:8000", "http://127.0.0.1:3000", "online", requests=3,
                   app_state="restarting", app_restarts=2, app_message="exited with code 1; restarting in 1.2 s",
                   waiting=held),
        TunnelView("docs", "http://docs.localhost:8000", "http://127.0.0.1:4000", "online",
                   app_state="failed", app_message="cannot start npm: No such file or directory"),
    ])
    # The ids count as soon as the total is known; the rows are read, and scrolled to, after.
    table = app.query_one(RequestTable)
    await async_wait_for(lambda: all(table.cached_row(i) for i in table.ids) and cursor_in_view(table),
                         what="the rows shown")
    await pilot.pause()


def test_tunnels_panel_with_app_states(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)

    assert snap_compare(_base(tmp_path), terminal_size=(110, 24), run_before=run_before)


def test_tunnels_panel_with_requests_held(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """12 requests wait for the restarting app of shop: the panel counts them before its state."""
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot, held=12)

    assert snap_compare(_base(tmp_path), terminal_size=(110, 24), run_before=run_before)


def test_logs_view(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.app.push_screen(LogsScreen("payments", _fixed))
        await async_wait_for(lambda: len(getattr(pilot.app.screen, "lines", [])) == len(LINES), what="lines")
        await pilot.pause()

    assert snap_compare(_base(tmp_path), terminal_size=(80, 24), run_before=run_before)


def test_logs_view_searching(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)
        await pilot.app.push_screen(LogsScreen("payments", _fixed))
        await async_wait_for(lambda: len(getattr(pilot.app.screen, "lines", [])) == len(LINES), what="lines")
        await pilot.press("slash", *"served", "enter")
        await async_wait_for(lambda: len(pilot.app.screen.lines) == 2, what="the matches")
        await pilot.pause()

    assert snap_compare(_base(tmp_path), terminal_size=(80, 24), run_before=run_before)


@pytest.mark.timeout(90)
async def test_up_runs_every_tunnel_and_app_under_one_inspector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    web, api = free_port(), free_port()
    (tmp_path / "devtunnel.toml").write_text(f"""\
[tunnels.web]
target = {web}
run = "{sys.executable} {APP} {web}"

[tunnels.api]
target = {api}
run = "{sys.executable} {APP} {api}"
hold = "5s"
""")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    db = tmp_path / "captures.db"
    argv = agent_command("up", "--no-tui", "--api-port", str(free_port()), "--db", str(db))
    app = inspector(db, tmp_path, agent_argv=argv, agent_log=tmp_path / "agent.log")
    async with app.run_test(size=(110, 30)):
        panel = app.query_one(TunnelsPanel)
        await async_wait_for(lambda: {n: t.app_state for n, t in panel.tunnels.items()} == {"web": "ready", "api": "ready"},
                             timeout=40, what="both tunnels with their apps ready")
        pids = await _app_pids(app)
        assert all(process_alive(pid) for pid in pids)
        await app.shutdown()
    wait_for(lambda: not any(process_alive(pid) for pid in pids), what="both apps stopped with the inspector")


async def test_a_log_read_failing_unexpectedly_is_said_on_the_logs_view(tmp_path: Path) -> None:
    async def broken(search: str) -> AsyncIterator[LogBatch]:
        raise KeyError("lines")
        yield LogBatch([])

    app = _base(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        await app.push_screen(LogsScreen("payments", broken))
        await async_wait_for(lambda: app._notifications, what="the error notice")
        notice = list(app._notifications)[-1]
        assert notice.title == "Unexpected error" and "KeyError: 'lines' (in follow logs)" in notice.message
        assert isinstance(app.screen, LogsScreen) and app.is_running


async def test_the_logs_view_follows_again_after_a_failure_and_replaces_the_lines(tmp_path: Path) -> None:
    calls: list[str] = []
    more = asyncio.Event()

    async def flaky(search: str) -> AsyncIterator[LogBatch]:
        calls.append(search)
        if len(calls) == 1:
            raise TunnelError("the agent API at http://127.0.0.1:1 did not answer")
        if len(calls) == 2:
            yield LogBatch(LINES[:2])
            return  # the stream ends (the tunnel stopped): followed again
        yield LogBatch(LINES[:3], dropped=4)
        await more.wait()
        yield LogBatch(LINES[3:4])
        await asyncio.Event().wait()

    app = _base(tmp_path)
    async with app.run_test(size=(100, 24)) as pilot:
        await _settle(pilot)
        screen = LogsScreen("payments", flaky, retry=0.01)
        await app.push_screen(screen)
        await async_wait_for(lambda: len(calls) == 3 and len(screen.lines) == 3, what="the third follow's lines")
        assert screen.lines == LINES[:3] and screen.problem == ""  # replaced, not appended to the second's
        status = str(screen.query_one("#logs-status", Static).render())
        assert "3 lines" in status and "4 lines dropped" in status
        more.set()
        await async_wait_for(lambda: len(screen.lines) == 4, what="a new line")
        assert "hostile \\x1b]0;pwned" in _log_text(screen) and "\x1b" not in _log_text(screen)
