"""The inspector with a real agent child process: new tunnel, live rows, replay, crash and restart."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from devtunnel.replay import Edit
from devtunnel.tui.screens.new_tunnel import NewTunnelScreen
from devtunnel.tui.widgets import RequestTable, TunnelsPanel
from tests.helpers import async_wait_for, free_port, process_alive
from tests.tui.app_fixtures import agent_serving, inspector_with_agent, screen_lines

pytestmark = pytest.mark.timeout(90)



async def _get(public_url: str, path: str) -> int:
    """GET through the tunnel: to the relay's loopback port, with the tunnel's Host."""
    url = urlsplit(public_url)
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{url.port}{path}", headers={"host": url.netloc})
    return response.status_code


async def test_inspector_starts_a_tunnel_shows_live_rows_and_survives_an_agent_crash(
        tmp_path: Path, service: int) -> None:
    db = tmp_path / "captures.db"
    app = inspector_with_agent(db, tmp_path)
    async with app.run_test(size=(110, 30)) as pilot:
        supervisor = app.supervisor
        assert supervisor is not None
        panel = app.query_one(TunnelsPanel)
        table = app.query_one(RequestTable)
        await agent_serving(app)
        assert "press n" in str(panel.render())

        # n: the form refuses a bad target, then starts the tunnel.
        await pilot.press("n")
        await async_wait_for(lambda: isinstance(app.screen, NewTunnelScreen), what="the form")
        await pilot.press(*"not a port", "enter")
        assert "invalid target 'not a port': the port is missing" in str(app.screen.query_one("#tunnel-error").render())
        app.screen.query_one("#target").value = str(service)
        app.screen.query_one("#name").value = "Shop"  # lowered, as devtunnel http --name and the API do
        await pilot.press("enter")
        await async_wait_for(lambda: panel.tunnels.get("shop") and panel.tunnels["shop"].state == "online",
                             timeout=20, what="the tunnel online")
        public_url = panel.tunnels["shop"].public_url
        assert public_url in str(panel.render())

        # A tunnel on a relay that is down: it is shown reconnecting, with the next retry.
        await pilot.press("n")
        await async_wait_for(lambda: isinstance(app.screen, NewTunnelScreen), what="the form again")
        app.screen.query_one("#target").value = str(service)
        app.screen.query_one("#name").value = "elsewhere"
        app.screen.query_one("#relay").value = f"ws://127.0.0.1:{free_port()}"
        await pilot.press("enter")
        await async_wait_for(lambda: panel.tunnels.get("elsewhere")
                             and panel.tunnels["elsewhere"].state == "reconnecting", timeout=20,
                             what="the tunnel reconnecting")
        await async_wait_for(lambda: "reconnecting (retry in" in str(panel.render()), what="the retry time")
        panel.focus()
        panel.cursor = list(panel.tunnels).index("elsewhere")
        await pilot.press("s")
        await async_wait_for(lambda: panel.tunnels["elsewhere"].state == "stopped", what="the tunnel stopped")
        table.focus()

        # Traffic appears on its own, through /api/events.
        assert await _get(public_url, "/first") == 200
        await async_wait_for(lambda: len(table.ids) == 1 and table.cached_row(table.ids[0]), what="the row")
        await pilot.pause()
        assert "/first" in screen_lines(table)[1] and "200" in screen_lines(table)[1]

        # r: replay through the API; the new exchange is linked to its original.
        await pilot.press("r")
        await async_wait_for(lambda: len(table.ids) == 2 and table.cached_row(table.ids[1]), what="the replay")
        assert table.cached_row(table.ids[1]).replay_of == table.ids[0]  # type: ignore[union-attr]

        # An edited replay goes through the API with its changes.
        original = await app.backend.get(table.ids[0])
        edited = await app.backend.replay(original, Edit(method="PUT", target=b"/edited?x=1",
                                                         set_headers=[("X-Edit", "yes")], body=b"\x00binary"))
        assert (edited.request.method, edited.request.target, edited.request.body) == ("PUT", b"/edited?x=1",
                                                                                      b"\x00binary")
        assert edited.request.headers.get("x-edit") == "yes" and edited.replay_of == original.id
        await async_wait_for(lambda: len(table.ids) == 3, what="the edited replay on the table")

        # The agent dies: it is started again, the tunnel comes back under its name, nothing is lost.
        first_pid = supervisor.status.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        await async_wait_for(lambda: supervisor.status.restarts == 1, what="the restart to be counted")
        await agent_serving(app, "the agent again")
        await async_wait_for(lambda: "restarts: 1" in str(panel.render()), what="the restart shown")
        await async_wait_for(lambda: panel.tunnels.get("shop") and panel.tunnels["shop"].state == "online"
                             and panel.tunnels["shop"].public_url, timeout=20, what="the tunnel back")
        assert await _get(panel.tunnels["shop"].public_url, "/after-restart") == 200
        await async_wait_for(lambda: len(table.ids) == 4, timeout=20, what="traffic after the restart")

        second_pid = supervisor.status.pid
        assert second_pid is not None and second_pid != first_pid
        await pilot.press("q")
        await async_wait_for(lambda: not app.is_running, what="the app to quit")
    assert not process_alive(second_pid)


async def test_the_cursor_stays_on_a_restarted_tunnel_so_the_next_key_acts_on_it(tmp_path: Path, service: int) -> None:
    """R reconnects the tunnel in its place: the cursor stays on it, and s then stops it, not
    another tunnel."""
    app = inspector_with_agent(tmp_path / "captures.db", tmp_path)
    async with app.run_test(size=(110, 30)) as pilot:
        panel = app.query_one(TunnelsPanel)
        await agent_serving(app)
        for name in ("one", "two"):
            await app.backend.start_tunnel(str(service), name, "", "")
        await async_wait_for(lambda: [t.name for t in panel.tunnels.values() if t.state == "online"] == ["one", "two"],
                             timeout=20, what="both tunnels online")
        panel.focus()
        await pilot.press("R")
        await async_wait_for(lambda: panel.tunnels["one"].state == "online", timeout=20, what="the tunnel back online")
        assert list(panel.tunnels) == ["one", "two"]
        assert panel.current is not None and panel.current.name == "one"
        await pilot.press("s")
        await async_wait_for(lambda: panel.tunnels["one"].state == "stopped", what="the restarted tunnel stopped")
        assert [t.name for t in panel.tunnels.values() if t.state == "online"] == ["two"]


async def test_copy_as_curl_of_a_row_of_a_stopped_tunnel_says_its_public_url_answers_no_more(
        tmp_path: Path, service: int) -> None:
    """c on a row of a tunnel stopped since: the command goes to a public URL that now answers
    404, and the notice says so (x chooses the local service instead)."""
    app = inspector_with_agent(tmp_path / "captures.db", tmp_path)
    async with app.run_test(size=(110, 30)) as pilot:
        panel = app.query_one(TunnelsPanel)
        table = app.query_one(RequestTable)
        await agent_serving(app)
        for name in ("one", "two"):
            await app.backend.start_tunnel(str(service), name, "", "")
        await async_wait_for(lambda: [t.name for t in panel.tunnels.values() if t.state == "online"] == ["one", "two"],
                             timeout=20, what="both tunnels online")
        assert await _get(panel.tunnels["one"].public_url, "/health") == 200
        await async_wait_for(lambda: len(table.ids) == 1, timeout=20, what="the row of one")
        panel.focus()
        await pilot.press("s")
        await async_wait_for(lambda: panel.tunnels["one"].state == "stopped", what="one stopped")
        table.focus()
        await pilot.press("c")
        await async_wait_for(lambda: any("curl command" in n.title for n in app._notifications),
                             what="the copy notice")
        notice = [n for n in app._notifications if "curl command" in n.title][-1]
        assert "one is stopped" in notice.message and "404" in notice.message


async def test_s_on_a_tunnel_of_up_stops_it_and_s_again_starts_it_with_its_app_hold_and_rules(tmp_path: Path) -> None:
    """A tunnel ``devtunnel up`` started from devtunnel.toml, stopped with s, could only come back
    with its app by restarting up: it stays listed as stopped, and s starts it again as it ran."""
    import sys

    from devtunnel.tui.supervisor import agent_command
    from tests.tui.app_fixtures import inspector

    port = free_port()
    app_fixture = Path(__file__).parent.parent / "net" / "app_fixture.py"
    config = tmp_path / "devtunnel.toml"
    config.write_text(f"""\
[tunnels.shop]
target = {port}
run = "{sys.executable} {app_fixture} {port}"
hold = "5s"

[[tunnels.shop.rules]]
action = "basic-auth"
users = ["user:secret-pass"]
""")
    db = tmp_path / "captures.db"
    app = inspector(db, tmp_path, agent_argv=agent_command("up", "--no-tui", "--api-port", str(free_port()),
                                                           "--db", str(db)),
                    agent_env={"DEVTUNNEL_CONFIG": str(config)}, agent_log=tmp_path / "agent.log")
    async with app.run_test(size=(130, 30)) as pilot:
        panel = app.query_one(TunnelsPanel)
        await agent_serving(app)
        await async_wait_for(lambda: panel.tunnels.get("shop") and panel.tunnels["shop"].app_state == "ready",
                             timeout=30, what="the tunnel and its app ready")
        first = panel.tunnels["shop"].public_url
        panel.focus()
        await pilot.press("s")
        await async_wait_for(lambda: panel.tunnels["shop"].state == "stopped" and "shop" in app.backend.stopped,
                             what="the tunnel stopped")
        assert [(t.name, t.state) for t in await app.backend.tunnels()] == [("shop", "stopped")]  # what the poll lists
        await pilot.pause()
        assert "stopped (s starts it again)" in str(panel.render()) and "app stopped" in str(panel.render())
        await pilot.press("s")
        await async_wait_for(lambda: panel.tunnels["shop"].state == "online"
                             and panel.tunnels["shop"].app_state == "ready", timeout=30,
                             what="the tunnel and its app back")
        assert panel.tunnels["shop"].public_url == first
        [tunnel] = await app.backend.tunnels()
        assert tunnel.name == "shop"
        async with httpx.AsyncClient() as client:
            url = urlsplit(first)
            answer = await client.get(f"http://127.0.0.1:{url.port}/x", headers={"host": url.netloc})
            assert answer.status_code == 401  # its rules kept
            answer = await client.get(f"http://127.0.0.1:{url.port}/x", headers={"host": url.netloc},
                                      auth=("user", "secret-pass"))
            assert answer.status_code == 200
        await pilot.press("q")
        await async_wait_for(lambda: not app.is_running, what="the app to quit")


async def test_requests_held_for_a_starting_app_are_counted_in_the_tunnels_panel_until_it_is_up(
        tmp_path: Path) -> None:
    """The panel said ``app starting`` and nothing of the webhooks waiting for it (``app.waiting``
    changed with no event): it now says how many are held, live, and stops once they went through."""
    import asyncio
    import sys

    from devtunnel.tui.supervisor import agent_command
    from tests.tui.app_fixtures import inspector

    port = free_port()
    ready = tmp_path / "ready"
    app_fixture = Path(__file__).parent.parent / "net" / "app_fixture.py"
    config = tmp_path / "devtunnel.toml"
    config.write_text(f"""\
[tunnels.shop]
target = {port}
run = "{sys.executable} {app_fixture} {port} --ready-file {ready}"
health = "/healthz"
hold = "30s"
""")
    db = tmp_path / "captures.db"
    app = inspector(db, tmp_path, agent_argv=agent_command("up", "--no-tui", "--api-port", str(free_port()),
                                                           "--db", str(db)),
                    agent_env={"DEVTUNNEL_CONFIG": str(config)}, agent_log=tmp_path / "agent.log")
    async with app.run_test(size=(130, 30)) as pilot:
        panel = app.query_one(TunnelsPanel)
        await agent_serving(app)
        await async_wait_for(lambda: panel.tunnels.get("shop") and panel.tunnels["shop"].state == "online"
                             and panel.tunnels["shop"].app_state == "starting", timeout=30,
                             what="the tunnel online, its app starting")
        assert "held" not in str(panel.render())
        # From here the panel hears only the agent's events: its poll of /api/tunnels (every 2 s)
        # would show the count late, by chance of another change, and is not what keeps it live.
        app._poll_tunnels = lambda: None  # type: ignore[method-assign]
        url = urlsplit(panel.tunnels["shop"].public_url)
        curls = [await asyncio.create_subprocess_exec(
            "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", "-H", f"Host: {url.netloc}",
            f"http://127.0.0.1:{url.port}/webhooks/{i}", stdout=asyncio.subprocess.PIPE) for i in range(3)]
        await async_wait_for(lambda: panel.tunnels["shop"].waiting == 3, timeout=20,
                             what="three requests held, told to the inspector")
        await pilot.pause()
        assert "3 requests held  app starting" in str(panel.render())
        ready.touch()
        codes = [(await curl.communicate())[0] for curl in curls]
        assert codes == [b"200"] * 3
        await async_wait_for(lambda: panel.tunnels["shop"].app_state == "ready"
                             and panel.tunnels["shop"].waiting == 0, what="the app ready, nothing held")
        await pilot.pause()
        assert "held" not in str(panel.render()) and "app ready" in str(panel.render())
        await pilot.press("q")
        await async_wait_for(lambda: not app.is_running, what="the app to quit")
