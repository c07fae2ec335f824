"""The tunnels panel in an 80-column terminal: an app crashing in a loop beside healthy ones still
shows, its state not cut off behind the request counts."""

from __future__ import annotations

from textual.app import App, ComposeResult

from devtunnel.tui.backend import TunnelView
from devtunnel.tui.widgets import TunnelsPanel
from tests.helpers import async_wait_for


class PanelApp(App[None]):
    def compose(self) -> ComposeResult:
        yield TunnelsPanel()


def tunnel(name: str, port: int, app_state: str, restarts: int = 0) -> TunnelView:
    return TunnelView(name, f"http://{name}.localhost:33855", f"http://127.0.0.1:{port}", "online", requests=12,
                      app_state=app_state, app_restarts=restarts)


async def test_a_crash_loop_shows_at_80_columns() -> None:
    async with PanelApp().run_test(size=(80, 6)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        panel.update_tunnels([tunnel("web", 18101, "ready"), tunnel("crashy", 18104, "restarting", 6)])
        await async_wait_for(lambda: "crashy" in str(panel.render()), what="both tunnels listed")
        await pilot.pause()
        lines = [line.text.rstrip() for line in panel.render_lines(panel.region.reset_offset)][:2]
        assert "app ready" in lines[0]
        assert "app restarting (6)" in lines[1]
        assert "crashy.localhost:33855" in lines[1]


async def test_a_line_that_fits_keeps_its_order() -> None:
    async with PanelApp().run_test(size=(120, 6)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        panel.update_tunnels([tunnel("crashy", 18104, "restarting", 6)])
        await async_wait_for(lambda: "crashy" in str(panel.render()), what="the tunnel listed")
        assert ("http://127.0.0.1:18104  online  12 req  0.0/s  app restarting (6)"
                in str(panel.render()))
