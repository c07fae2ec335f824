"""The inspector and rules at the edge: the mark of a decided row, the rule in the detail, the drill key."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtunnel.capture.model import RuleMark
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.store import Store
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.service import AgentService
from devtunnel.api.app import serve_api
from devtunnel.rules import parse_rules
from devtunnel.tui.screens.detail import DetailScreen, exchange_title
from devtunnel.tui.screens.drill import DrillScreen
from devtunnel.tui.widgets import RequestTable
from tests.helpers import async_wait_for
from tests.net.test_rules_edge import request
from tests.net.tunnel_fixtures import Harness
from tests.tui.app_fixtures import inspector, screen_lines

pytestmark = pytest.mark.timeout(90)


async def select(pilot, table: RequestTable, path: str) -> str:  # type: ignore[no-untyped-def]
    """Move the cursor to the row of ``path`` with the keys (screen line 0 is the header); returns its id."""
    for _ in range(20):
        row = next(i for i, line in enumerate(screen_lines(table)) if path in line) - 1
        if table.cursor == row and table.current_id is not None:
            return table.current_id
        await pilot.press("up" if table.cursor > row else "down")
    raise AssertionError(f"the cursor never reached the row of {path}")


async def test_a_drill_from_a_row_answers_the_next_n_at_the_relay(tmp_path: Path, service: int) -> None:
    db = tmp_path / "captures.db"
    store = Store(db)
    recorder = Recorder(store)
    agent = AgentService(store=store, recorder=recorder)
    await agent.start()
    rules = parse_rules([{"match": "path:/admin", "action": "deny"}], "t")
    await agent.start_tunnel(TunnelConfig(target=str(service), name="shop", rules=rules))
    relay = agent.embedded_relay
    harness = Harness(relay, agent, store, recorder)
    api, api_port = await serve_api(agent, 0)
    app = inspector(db, tmp_path)
    app.backend.api_url = f"http://127.0.0.1:{api_port}"
    try:
        assert (await request(harness, "/admin", name="shop"))[0] == 403
        assert (await request(harness, "/hooks/x", name="shop"))[0] == 200
        await harness.exchanges(2)
        async with app.run_test(size=(100, 24)) as pilot:
            table = app.query_one(RequestTable)
            await async_wait_for(lambda: sum("/hooks/x" in l or "/admin" in l for l in screen_lines(table)) == 2,
                                 what="both rows")
            lines = screen_lines(table)
            assert any("⊘ /admin" in l for l in lines) and not any("⊘ /hooks" in l for l in lines)

            # The detail of the refused request names the rule, in its title and its timing tab.
            await select(pilot, table, "/admin")
            await pilot.press("enter")
            await async_wait_for(lambda: isinstance(app.screen, DetailScreen), what="the detail")
            assert app.screen.exchange.rule == RuleMark(1, "deny")
            assert "rule 1 deny (answered at the relay)" in app.screen._timing().plain
            assert "rule 1 deny" in exchange_title(app.screen.exchange).plain
            await pilot.press("escape")

            # a on the GET row: answer the next 2 like it with 503.
            hook = await select(pilot, table, "/hooks/x")
            await pilot.press("a")
            # Pushed once the exchange is read; its fields mount after: wait for the one enter submits.
            await async_wait_for(lambda: isinstance(app.screen, DrillScreen) and app.screen.query("#count")
                                 and app.screen.query_one("#count").has_focus, what="the drill form, its count focused")
            assert app.screen.exchange.id == hook
            app.screen.query_one("#count").value = "0"
            await pilot.press("enter")
            assert "count must be a whole number" in str(app.screen.query_one("#drill-error").render())
            app.screen.query_one("#count").value = "2"
            app.screen.query_one("#status").value = "503"
            await pilot.press("enter")
            await async_wait_for(lambda: len(agent.rules("shop")) == 2, what="the rule at the agent")
            assert agent.rules("shop")[0].match == 'method:GET path:"/hooks/x"'
            assert (agent.rules("shop")[0].count, agent.rules("shop")[0].status) == (2, 503)
            await async_wait_for(lambda: relay.rules_of("shop") is not None and len(relay.rules_of("shop").rules) == 2,
                                 what="the rule at the relay")
        statuses = [(await request(harness, "/hooks/x", name="shop"))[0] for _ in range(3)]
        assert statuses == [503, 503, 200]
    finally:
        await api.stop()
        await agent.stop()
        recorder.close()
        store.close()


@pytest.mark.parametrize("status", [200, 204, 304, 418, 503])
def test_the_drills_rule_is_one_the_rules_take_for_every_status_the_form_takes(status: int) -> None:
    """A drill of 204 or 304 carried its note as a body, which the rules refuse after such a
    head ("Drill not added: ... a 204 answer has no body")."""
    from devtunnel.tui.screens.drill import Drill, check

    assert check("3", str(status)) is None
    rule = Drill("shop", 'method:GET path:"/x"', 3, status).rule()
    (parsed,) = parse_rules([rule], "the drill", files=False)
    assert (parsed.status, parsed.count) == (status, 3)
    assert bool(parsed.body) == (status not in (204, 304))
