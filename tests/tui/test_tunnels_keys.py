"""The tunnels panel's key bar offers what the keys do on the tunnel under the cursor: ``s Start``
on a stopped tunnel (``s Stop`` there started it), and no tunnel key with no tunnel."""

from __future__ import annotations

from textual import on
from textual.app import App, ComposeResult
from textual.widgets._footer import FooterKey

from devtunnel.tui.backend import TunnelView
from devtunnel.tui.widgets import TunnelsPanel
from devtunnel.tui.widgets.footer import Footer
from tests.helpers import async_wait_for


class PanelApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.actions: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        yield TunnelsPanel()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(TunnelsPanel).focus()

    @on(TunnelsPanel.Action)
    def _action(self, event: TunnelsPanel.Action) -> None:
        self.actions.append((event.action, event.tunnel.name))


def shop(state: str = "online", app_state: str = "") -> TunnelView:
    return TunnelView("shop", "http://shop.localhost:8000", "http://127.0.0.1:3000", state, requests=3,
                      app_state=app_state)


def offered(app: App[None]) -> dict[str, str]:
    """The key bar's keys (``key_display`` or key) and what each says."""
    return {key.key_display or key.key: key.description for key in app.query(FooterKey) if key.is_attached}


async def test_a_stopped_tunnel_offers_start_not_stop() -> None:
    app = PanelApp()
    async with app.run_test(size=(100, 8)) as pilot:
        panel = app.query_one(TunnelsPanel)
        await async_wait_for(lambda: "s" not in offered(app) and "y" not in offered(app),
                             what="no tunnel key without a tunnel")
        panel.update_tunnels([shop()])
        await async_wait_for(lambda: offered(app).get("s") == "Stop", what="s Stop on a running tunnel")
        assert offered(app).get("R") == "Restart"
        panel.update_tunnels([shop("stopped")])
        await async_wait_for(lambda: offered(app).get("s") == "Start", what="s Start on a stopped tunnel")
        assert "R" not in offered(app)
        await pilot.press("s")
        await async_wait_for(lambda: app.actions == [("start", "shop")], what="s asks to start it")
        await pilot.press("R")  # starts it too, as docs/inspector.md says, without a second word in the bar
        await async_wait_for(lambda: app.actions[-1:] == [("start", "shop")] and len(app.actions) == 2,
                             what="R asks to start it")
