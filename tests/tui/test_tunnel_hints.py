"""A dev server refusing the tunnel, seen in the inspector: the agent's hint (``Vite refused the Host
...: add ... to server.allowedHosts``) went to its log and the app's, which an inspector user who
started the dev server in another terminal never reads. Now the tunnel's entry in the agent API
carries it, the tunnels panel shows the latest under the tunnel, and a notification says it whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from textual.app import App, ComposeResult

from devtunnel.agent.info import TunnelInfo, TunnelState
from devtunnel.errors import TunnelError
from devtunnel.export.agent_json import tunnel_json
from devtunnel.tui.backend import TunnelView
from devtunnel.tui.supervisor import agent_command
from devtunnel.tui.widgets import TunnelsPanel
from tests.helpers import async_wait_for, free_port
from tests.tui.app_fixtures import fill, inspector, traffic, utc

VITE = ('Vite refused the Host "{host}": add "{host}" to server.allowedHosts in vite.config.js,'
        " or start devtunnel with --host-header rewrite (the local Host)")


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


def test_the_api_sends_the_hints_escaped_and_the_inspector_reads_them() -> None:
    info = TunnelInfo(name="web", public_url="http://web.localhost:8000", target_url="http://127.0.0.1:5173",
                      state=TunnelState.ONLINE, hints=("Vite refused the Host \"a\x1b[2Jb\": add it",))
    sent = tunnel_json(info)
    assert sent["hints"] == ['Vite refused the Host "a\\x1b[2Jb": add it']
    assert TunnelView.from_json(sent).hints == ('Vite refused the Host "a\\x1b[2Jb": add it',)
    older = {k: v for k, v in sent.items() if k != "hints"}  # an agent from before hints
    assert TunnelView.from_json(older).hints == ()
    for bad in ("one line", [1], None):
        with pytest.raises(TunnelError, match="malformed tunnel"):
            TunnelView.from_json(dict(sent, hints=bad))


async def _vite(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Vite 6's host check, word for word: a Host that is not loopback gets 403."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    host = next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("host:"))
    name = host.rsplit(":", 1)[0]
    if name in ("localhost", "127.0.0.1"):
        status, body = b"200 OK", b"<!doctype html><h1>dev app</h1>"
    else:
        status, body = b"403 Forbidden", (f'Blocked request. This host ("{name}") is not allowed.\n'
                                          f'To allow this host, add "{name}" to `server.allowedHosts` in vite.config.js.'
                                          ).encode()
    writer.write(b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                 % (status, len(body), body))
    await writer.drain()
    writer.close()


@asynccontextmanager
async def vite_server() -> AsyncIterator[int]:
    server = await asyncio.start_server(_vite, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.timeout(90)
async def test_a_vite_refusing_the_public_host_is_explained_in_the_panel_with_no_recording(tmp_path: Path) -> None:
    """``devtunnel http 5173 --no-record`` with Vite started in another terminal: a request through
    the public URL gets Vite's 403, and the inspector says what lets it through."""
    db = tmp_path / "captures.db"
    async with vite_server() as port:
        argv = agent_command("http", str(port), "--name", "web", "--no-tui", "--no-record",
                             "--api-port", str(free_port()), "--db", str(db))
        app = inspector(db, tmp_path, agent_argv=argv, agent_log=tmp_path / "agent.log")
        async with app.run_test(size=(100, 30)) as pilot:
            panel = app.query_one(TunnelsPanel)
            await async_wait_for(lambda: (t := panel.tunnels.get("web")) is not None and t.state == "online",
                                 timeout=40, what="the tunnel online in the panel")
            public = httpx.URL(panel.tunnels["web"].public_url)  # http://web.localhost:PORT, the embedded relay
            host, url = public.host, f"http://127.0.0.1:{public.port}"
            async with httpx.AsyncClient(timeout=10, headers={"Host": f"{host}:{public.port}"}) as client:
                answer = await client.get(url + "/")
            assert answer.status_code == 403 and answer.text.startswith("Blocked request.")
            hint = VITE.format(host=host)
            await async_wait_for(lambda: panel.tunnels["web"].hints == (hint,), timeout=10, what="the hint in the panel")
            await pilot.pause()
            lines = [line.text.rstrip() for line in panel.render_lines(panel.region.reset_offset)]
            assert lines[1].startswith(f'   ⚠ Vite refused the Host "{host}": add "{host}" to server')
            assert [n.message for n in app._notifications if n.severity == "warning"] == [hint]
            async with httpx.AsyncClient(timeout=10, headers={"Host": f"{host}:{public.port}"}) as client:
                assert (await client.get(url + "/again")).status_code == 403  # said once: no second notification
            async with httpx.AsyncClient(timeout=10) as client:
                tunnel = (await client.get(app.backend.api_url + "/api/tunnels/web")).json()
            assert tunnel["hints"] == [hint]
            await pilot.pause()
            assert len([n for n in app._notifications if n.severity == "warning"]) == 1
            await app.shutdown()


class PanelApp(App[None]):
    def compose(self) -> ComposeResult:
        yield TunnelsPanel()


async def test_the_hint_line_follows_the_cursor_and_shows_no_control_character() -> None:
    async with PanelApp().run_test(size=(100, 8)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        panel.update_tunnels([TunnelView("web", "http://web.localhost:8000", "http://127.0.0.1:5173", "online",
                                         hints=("first", "Vite refused the Host \"a\x1b[2Jb\"")),
                              TunnelView("api", "http://api.localhost:8000", "http://127.0.0.1:8000", "online")])
        await pilot.pause()

        def shown() -> list[str]:
            return [line.text.rstrip() for line in panel.render_lines(panel.region.reset_offset)][:panel.size.height]

        lines = shown()
        assert len(lines) == 3 and "web.localhost" in lines[0] and "api.localhost" in lines[2]
        assert lines[1] == '   ⚠ Vite refused the Host "a\\x1b[2Jb"'
        panel.focus()
        await pilot.press("down")
        await pilot.pause()
        assert len(shown()) == 2 and not any("⚠" in line for line in shown())
        # Both in one notification, a line each.
        assert [n.message for n in pilot.app._notifications] == ['first\nVite refused the Host "a\\x1b[2Jb"']


async def test_many_hints_at_once_come_up_in_one_notification_that_counts_the_rest() -> None:
    """An inspector opened on an agent already holding 16 hints says them once, not in 16 toasts."""
    async with PanelApp().run_test(size=(100, 8)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        hints = tuple(f"hint {n}" for n in range(16))
        panel.update_tunnels([TunnelView("web", "http://web.localhost:8000", "http://127.0.0.1:5173", "online",
                                         hints=hints)])
        await pilot.pause()
        assert [n.message for n in pilot.app._notifications] == [
            "hint 0\nhint 1\nhint 2\nand 13 more hints: GET /api/tunnels/web lists them"]
        panel.update_tunnels([TunnelView("web", "http://web.localhost:8000", "http://127.0.0.1:5173", "online",
                                         hints=(*hints[1:], "hint 16"))])
        await pilot.pause()
        assert [n.message for n in pilot.app._notifications][1:] == ["hint 16"]  # only what is new


# -- snapshot -------------------------------------------------------------------------------------


def test_tunnels_panel_with_a_hint(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        from devtunnel.tui.widgets import RequestTable, StatsStrip
        app = pilot.app
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: len(table.ids) == 6 and all(table.cached_row(i) for i in table.ids), what="rows")
        stats = app.query_one(StatsStrip)
        await async_wait_for(lambda: stats.status_mix, what="the status mix counted")
        panel = app.query_one(TunnelsPanel)
        panel.update_tunnels([
            TunnelView("web", "https://web.tunnel.example.com", "http://127.0.0.1:5173", "online", requests=6,
                       hints=(VITE.format(host="web.tunnel.example.com"),)),
            TunnelView("api", "https://api.tunnel.example.com", "http://127.0.0.1:8000", "online", requests=2),
        ])
        await pilot.pause()

    assert snap_compare(inspector(fill(tmp_path / "captures.db", traffic(6)), tmp_path), terminal_size=(80, 24),
                        run_before=run_before)
