"""The tunnels panel's request rate is the stats strip's count, per tunnel: the two agree (the
panel averaged the agent's request counts over ten seconds of polls, two seconds apart, and lagged
the strip's last whole second), with a filter that hides a tunnel's rows too."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.tui.backend import TunnelView
from devtunnel.tui.widgets import StatsStrip, TunnelsPanel
from devtunnel.tui.widgets.stats import RequestRate
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import fill, fixed_id, inspector, make_exchange, utc


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_counted_then_named_move_to_their_tunnels_in_their_second() -> None:
    clock = Clock()
    rate = RequestRate(clock=clock)
    second = rate.count(5)
    clock.now += 0.5
    rate.attribute(second, {"shop": 3, "hooks": 2, "gone": 9})  # more than were counted: only those
    clock.now += 0.6
    assert rate.last_second() == 5
    assert (rate.last_second("shop"), rate.last_second("hooks")) == (3, 2)
    clock.now += 1
    assert rate.last_second() == rate.last_second("shop") == 0
    assert rate.series()[-3:] == [5, 0, 0]
    assert (rate.total("shop"), rate.total("hooks"), rate.total("gone")) == (3, 2, 0)
    later = rate.count(1)
    clock.now += 60  # named after a read slower than the window: in the total all the same
    rate.attribute(later, {"shop": 1})
    assert rate.total("shop") == 4 and sum(rate.series()) == 0


def _figures(app: object) -> tuple[int, dict[str, int]]:
    """The strip's ``N/s`` and each tunnel's in the panel, read in the same moment."""
    stats = app.query_one(StatsStrip)  # type: ignore[attr-defined]
    panel = app.query_one(TunnelsPanel)  # type: ignore[attr-defined]
    total = int(re.search(r" (\d+)/s", str(stats.render())).group(1))  # type: ignore[union-attr]
    tunnels = {name: int(m.group(1)) for name, m in
               ((line.split(".localhost")[0].split()[-1].removeprefix("http://"), re.search(r"  (\d+)/s", line))
                for line in str(panel.render()).splitlines()) if m}
    return total, tunnels


@pytest.mark.parametrize("expression", ["", "tunnel:hooks"])
async def test_the_panel_and_the_strip_give_the_same_rate(tmp_path: Path, expression: str) -> None:
    db = fill(tmp_path / "captures.db", [make_exchange(0, tunnel="shop")])
    app = inspector(db, tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        await async_wait_for(lambda: app.live.loaded.is_set(), what="the list loaded")
        panel, stats = app.query_one(TunnelsPanel), app.query_one(StatsStrip)
        clock = Clock()  # the second the requests come in lasts until the test moves on
        clock.now = float(int(time.time()))
        stats.rate = panel.request_rate = RequestRate(clock=clock)
        stats.rate.listen(stats.refresh)
        panel.update_tunnels([TunnelView("shop", "http://shop.localhost:8000", "http://127.0.0.1:3000", "online", requests=1),
                              TunnelView("hooks", "http://hooks.localhost:8000", "http://127.0.0.1:3001", "online")])
        if expression:
            await pilot.press("slash", *expression, "enter")
            await async_wait_for(lambda: app.live.expression == expression, what="the filter applied")
        # Five requests in one second, three of shop and two of hooks: the agent's counts (what the
        # panel averaged) are not even asked for.
        fill(db, [make_exchange(n, tunnel="shop" if n % 2 else "hooks") for n in range(1, 6)])
        app.live.changed([fixed_id(n) for n in range(1, 6)])
        await async_wait_for(lambda: stats.rate.series()[-1] == 5, what="the five counted")
        clock.now += 1  # their second is over: both show it
        await async_wait_for(lambda: _figures(app) == (5, {"shop": 3, "hooks": 2}),
                             what="the panel's rates, tunnel by tunnel, adding up to the strip's")


def _requests(panel: TunnelsPanel, name: str) -> int | None:
    """The ``N req`` of tunnel ``name``'s line in the panel."""
    for line in str(panel.render()).splitlines():
        if f"//{name}.localhost" in line or f" {name}.localhost" in line:
            match = re.search(r"  (\d+) req", line)
            return int(match.group(1)) if match else None
    return None


async def test_a_tunnels_request_count_moves_as_requests_arrive_and_goes_on_after_a_stop_and_start(tmp_path: Path) -> None:
    """The panel showed the agent's count, read every two seconds, and a stop and a start of the
    tunnel put it back to 0 while the table still listed its requests. It is the strip's count
    now, tunnel by tunnel, from the agent's count when the panel first saw the tunnel."""
    db = fill(tmp_path / "captures.db", [make_exchange(0, tunnel="shop")])
    app = inspector(db, tmp_path)

    def shop(state: str, requests: int) -> TunnelView:
        return TunnelView("shop", "http://shop.localhost:8000", "http://127.0.0.1:3000", state, requests=requests)

    async with app.run_test(size=(120, 30)):
        await async_wait_for(lambda: app.live.loaded.is_set(), what="the list loaded")
        panel = app.query_one(TunnelsPanel)
        panel.update_tunnels([shop("online", 2)])  # two before the inspector looked
        assert _requests(panel, "shop") == 2
        fill(db, [make_exchange(n, tunnel="shop" if n < 4 else "hooks") for n in range(1, 5)])
        app.live.changed([fixed_id(n) for n in range(1, 5)])  # no poll of the agent follows
        await async_wait_for(lambda: _requests(panel, "shop") == 5, what="three more counted as they came")
        panel.update_tunnels([shop("stopped", 5)])
        panel.update_tunnels([shop("online", 0)])  # started again: the agent counts from 0
        assert _requests(panel, "shop") == 5
        fill(db, [make_exchange(5, tunnel="shop")])
        app.live.changed([fixed_id(5)])
        await async_wait_for(lambda: _requests(panel, "shop") == 6, what="counting on after the start")
