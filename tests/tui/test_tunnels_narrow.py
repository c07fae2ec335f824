"""The tunnels panel in an 80-column terminal: an app crashing in a loop beside healthy ones still
shows, its state not cut off behind the request counts; an app that ended cleanly is not "crashed"."""

from __future__ import annotations

from dataclasses import replace

from textual.app import App, ComposeResult

from devtunnel.agent.app_runner import app_json
from devtunnel.agent.children import ChildState
from devtunnel.agent.info import TunnelInfo, TunnelState
from devtunnel.export.agent_json import tunnel_json
from devtunnel.tui.backend import TunnelView
from devtunnel.tui.widgets import TunnelsPanel
from devtunnel.tui.widgets.stats import RequestRate
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
        panel.update_tunnels([tunnel("web", 18101, "ready"), tunnel("crashy", 18104, "restarting", 16)])
        await async_wait_for(lambda: "crashy" in str(panel.render()), what="both tunnels listed")
        await pilot.pause()
        lines = [line.text.rstrip() for line in panel.render_lines(panel.region.reset_offset)][:2]
        assert "app ready" in lines[0]
        assert "app restarting (16)" in lines[1]
        assert "crashy.localhost:33855 → 127.0.0.1:18104" in lines[1]


async def test_a_line_that_fits_keeps_its_order() -> None:
    async with PanelApp().run_test(size=(120, 6)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        panel.update_tunnels([tunnel("crashy", 18104, "restarting", 6)])
        await async_wait_for(lambda: "crashy" in str(panel.render()), what="the tunnel listed")
        assert ("http://127.0.0.1:18104  online  12 req  0/s  app restarting (6)"
                in str(panel.render()))


async def test_a_restarting_app_says_how_it_ended_without_a_countdown_that_would_go_stale() -> None:
    # It said "app restarting (4)" alone: why it keeps crashing was only in the logs (l).
    message = "exited with code 2: python3: can't open file 'nope.py'; restarting in 7.0 s"
    crashy = replace(tunnel("crashy", 18104, "restarting", 4), app_exit_code=2, app_message=message)
    for width in (160, 80):
        async with PanelApp().run_test(size=(width, 6)) as pilot:
            panel = pilot.app.query_one(TunnelsPanel)
            panel.update_tunnels([crashy])
            await async_wait_for(lambda: "crashy" in str(panel.render()), what="the tunnel listed")
            await pilot.pause()
            line = [line.text.rstrip() for line in panel.render_lines(panel.region.reset_offset)][0]
            assert "app restarting (4)" in line and "restarting in" not in line, line  # at 80 the reason is cut (…)
            if width == 160:
                assert line.endswith("app restarting (4): exited with code 2: python3: can't open file 'nope.py'"), line


async def test_a_restarting_apps_state_is_never_cut_for_its_message() -> None:
    # At a width where the line fitted without the message by a column or two, the ellipsis cut
    # the state itself: "app restarting (3…".
    message = "exited with code 2: python3: can't open file 'nope.py'; restarting in 7.0 s"
    crashy = replace(tunnel("crashy", 18104, "restarting", 3), app_exit_code=2, app_message=message)
    base = len(" ● http://crashy.localhost:33855 → http://127.0.0.1:18104  online  12 req  0/s  app restarting (3)")
    for width in range(base - 1, base + 6):
        async with PanelApp().run_test(size=(width + 2, 6)) as pilot:  # the panel's padding: 1 column a side
            panel = pilot.app.query_one(TunnelsPanel)
            panel.update_tunnels([crashy])
            await async_wait_for(lambda: "crashy" in str(panel.render()), what="the tunnel listed")
            await pilot.pause()
            line = [line.text.rstrip() for line in panel.render_lines(panel.region.reset_offset)][0]
            assert "app restarting (3)" in line, (width, line)


async def test_the_cursor_tunnel_stays_in_sight_in_a_long_list() -> None:
    """Seven tunnels in a panel of six lines: moving down to the last keeps its line (the one s
    stops) on screen, and a line says how many there are."""
    async with PanelApp().run_test(size=(120, 24)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        panel.update_tunnels([tunnel(f"t{i}", 18100 + i, "ready") for i in range(7)])
        await async_wait_for(lambda: "t6" in str(panel.render()),
                             what="the panel laid out")
        await pilot.pause()
        panel.focus()
        await pilot.press(*["down"] * 6)
        await pilot.pause()
        assert panel.current is not None and panel.current.name == "t6"
        shown = [line.text for line in panel.render_lines(panel.region.reset_offset)]
        assert len(shown) == panel.content_size.height == 6
        assert any("t6.localhost" in line for line in shown)
        assert "7 tunnels" in shown[-1]
        await pilot.press(*["up"] * 6)
        await pilot.pause()
        shown = [line.text for line in panel.render_lines(panel.region.reset_offset)]
        assert "t0.localhost" in shown[0]


async def test_an_app_that_ended_cleanly_shows_exited_0_as_the_agent_api_says_it() -> None:
    def api_tunnel(name: str, state: ChildState) -> TunnelView:
        app = app_json(state, command="make serve", health=None, hold=0.0, log_lines=2)
        return TunnelView.from_json(tunnel_json(TunnelInfo(name=name, public_url=f"http://{name}.localhost:33855",
                                                           target_url="http://127.0.0.1:3000",
                                                           state=TunnelState.ONLINE, app=app)))

    async with PanelApp().run_test(size=(120, 6)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        panel.update_tunnels([api_tunnel("done", ChildState("exited", exit_code=0, message="ended cleanly")),
                              api_tunnel("boom", ChildState("crashed", exit_code=1, message="exited with code 1"))])
        await async_wait_for(lambda: "boom" in str(panel.render()), what="both tunnels listed")
        shown = str(panel.render())
        assert "app exited (0)" in shown and "crash" not in shown.split("boom")[0]
        assert "app crashed: exited with code 1" in shown


async def test_j_and_k_choose_a_tunnel_as_they_move_in_the_request_table() -> None:
    """Tab to the panel, j to the second tunnel, s: it stopped the first one (j did nothing there)."""
    async with PanelApp().run_test(size=(120, 6)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        panel.update_tunnels([tunnel("web", 18101, "ready"), tunnel("api", 18102, "ready")])
        await async_wait_for(lambda: "api" in str(panel.render()), what="both tunnels listed")
        panel.focus()
        await pilot.press("j")
        assert panel.current is not None and panel.current.name == "api"
        await pilot.press("k")
        assert panel.current is not None and panel.current.name == "web"


async def test_requests_held_are_counted_before_the_app_state_and_without_an_app() -> None:
    async with PanelApp().run_test(size=(120, 6)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        bare = TunnelView("bare", "http://bare.localhost:33855", "http://127.0.0.1:18105", "online", waiting=1)
        panel.update_tunnels([replace(tunnel("crashy", 18104, "restarting", 6), waiting=12), bare])
        await async_wait_for(lambda: "bare" in str(panel.render()), what="the tunnels listed")
        rendered = str(panel.render())
        assert "12 req  0/s  12 requests held  app restarting (6)" in rendered
        assert "online  0 req  0/s  1 request held" in rendered


async def test_a_busy_tunnel_fits_80_columns_whole() -> None:
    """Without an app the line was never shortened: at 80 columns ``122 req  15.9/s`` read
    ``122 req  15.9…``, and a stopped tunnel's counts were cut behind ``(s starts it again)``."""
    busy = TunnelView("shop", "http://shop.localhost:45985", "http://127.0.0.1:18777", "online", requests=12200)
    stopped = TunnelView("payments-staging", "http://payments-staging.localhost:45985", "http://127.0.0.1:18778",
                         "stopped", requests=98765)
    async with PanelApp().run_test(size=(80, 6)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        now = [1000.0]
        panel.request_rate = RequestRate(clock=lambda: now[0])
        panel.request_rate.attribute(panel.request_rate.count(250), {"shop": 250})
        now[0] += 1  # a whole second of 250 requests
        short = TunnelView("a", "http://a.localhost:1", "http://127.0.0.1:2", "online")
        panel.update_tunnels([busy, stopped, short])
        await async_wait_for(lambda: "a.localhost" in str(panel.render()), what="the tunnels listed")
        await pilot.pause()
        lines = [line.text.rstrip() for line in panel.render_lines(panel.region.reset_offset)][:3]
        assert all("…" not in line and len(line) <= 80 for line in lines), lines
        # The line that fits whole drops http:// with the others: the URLs stay in columns.
        assert lines[2] == " ● a.localhost:1 → 127.0.0.1:2  online  0 req  0/s", lines[2]
        assert lines[0].endswith("shop.localhost:45985 → 127.0.0.1:18777  online  12200 req  250/s"), lines[0]
        assert lines[1].endswith("payments-staging.localhost:45985 → 127.0.0.1:18778  stopped  98765 req  0/s"), lines[1]


async def test_a_line_that_fits_keeps_http_and_the_hint_of_a_stopped_tunnel() -> None:
    stopped = TunnelView("shop", "http://shop.localhost:45985", "http://127.0.0.1:18777", "stopped", requests=3)
    async with PanelApp().run_test(size=(120, 6)) as pilot:
        panel = pilot.app.query_one(TunnelsPanel)
        panel.update_tunnels([stopped])
        await async_wait_for(lambda: "shop" in str(panel.render()), what="the tunnel listed")
        await pilot.pause()
        assert ("● http://shop.localhost:45985 → http://127.0.0.1:18777  stopped (s starts it again)  3 req  0/s"
                == str(panel.render()))
