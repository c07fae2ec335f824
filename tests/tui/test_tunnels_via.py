"""The tunnels panel shows a tunnel's public-URL provider (``--via``) and its state."""

from __future__ import annotations

from textual.app import App, ComposeResult

from devtunnel.agent.info import TunnelInfo, TunnelState
from devtunnel.export.agent_json import tunnel_json
from devtunnel.agent.via_runner import ViaStatus
from devtunnel.tui.backend import TunnelView
from devtunnel.tui.widgets import TunnelsPanel


class PanelApp(App[None]):
    def compose(self) -> ComposeResult:
        yield TunnelsPanel(clock=lambda: 1000.0)


def view(name: str, state: TunnelState, via: ViaStatus) -> TunnelView:
    info = TunnelInfo(name=name, public_url=via.url, target_url="http://127.0.0.1:8000", state=state, via=via)
    return TunnelView.from_json(tunnel_json(info))


async def test_the_provider_and_its_state_are_shown_beside_the_target() -> None:
    url = "https://seasonal-deck-organisms-sf.trycloudflare.com"
    online = view("hooks", TunnelState.ONLINE, ViaStatus("cloudflared", "online", url, pid=42))
    assert (online.public_url, online.via, online.via_state) == (url, "cloudflared", "online")
    restarting = view("mine", TunnelState.RECONNECTING, ViaStatus("ssh:me@host", "restarting", "http://host:40021",
                                                          restarts=2, message="exited with code 255"))
    async with PanelApp().run_test(size=(160, 8)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        panel.update_tunnels([online, restarting])
        await pilot.pause()
        text = str(panel.render())
    first, second = text.splitlines()
    assert f"{url} → http://127.0.0.1:8000  via cloudflared  online" in first
    assert "via ssh:me@host (restarting)  reconnecting" in second


def test_a_tunnel_without_provider_reads_as_before() -> None:
    info = TunnelInfo(name="plain", public_url="http://plain.localhost:8000", target_url="http://127.0.0.1:1",
                      state=TunnelState.ONLINE)
    data = tunnel_json(info)
    assert data["via"] is None
    plain = TunnelView.from_json(data)
    assert (plain.via, plain.via_state) == ("", "")
