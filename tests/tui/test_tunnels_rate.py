"""The tunnels panel's request rate: a tunnel counted afresh (restarted with R) never reads as a negative rate."""

from __future__ import annotations

from textual.app import App, ComposeResult

from devtunnel.tui.backend import TunnelView
from devtunnel.tui.widgets import TunnelsPanel
from tests.helpers import async_wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class PanelApp(App[None]):
    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def compose(self) -> ComposeResult:
        yield TunnelsPanel(clock=self.clock)


def shop(requests: int) -> TunnelView:
    return TunnelView("shop", "http://shop.localhost:8000", "http://127.0.0.1:3000", "online", requests=requests)


async def test_a_restarted_tunnel_counts_its_rate_afresh() -> None:
    clock = Clock()
    async with PanelApp(clock).run_test(size=(120, 6)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        panel.update_tunnels([shop(30)])
        clock.now += 5
        panel.update_tunnels([shop(40)])
        await async_wait_for(lambda: "40 req  2.0/s" in str(panel.render()), what="the rate before the restart")
        # R: the agent stops the tunnel and starts it again under the same name, its count back at 0.
        clock.now += 1
        panel.update_tunnels([shop(0)])
        await async_wait_for(lambda: "0 req  0.0/s" in str(panel.render()), what="a rate counted afresh")
        clock.now += 2
        panel.update_tunnels([shop(4)])
        await async_wait_for(lambda: "4 req  2.0/s" in str(panel.render()), what="the rate of the new count")
        assert "-" not in str(panel.render()).split("req", 1)[1]
