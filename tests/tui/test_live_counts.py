"""The live view's counts: the status mix waits for a filter's count a user is waiting on, and
goes on as soon as that count ends (an event, not a polling interval)."""

from __future__ import annotations

import asyncio
from typing import Any

from devtunnel.capture.filters import parse
from devtunnel.tui.live import STATUS_FILTERS, LiveView


class _Stats:
    def __init__(self) -> None:
        self.mix: dict[str, int] | None = None
        self.shown = 0

    def set_mix(self, mix: dict[str, int]) -> None:
        self.mix = mix


class _Backend:
    """Counts answer when the test lets them; every count asked is recorded in order."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    async def count(self, flt: Any) -> int:
        key = "filter" if flt is not None and str(flt) == str(parse("method:POST")) else "mix"
        self.asked.append(key)
        if key == "filter":
            await self.release.setdefault(key, asyncio.Event()).wait()
            return 7
        return 1


async def _until(condition: Any, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0)


async def test_the_mix_waits_for_a_filters_count_and_follows_it_at_once() -> None:
    backend = _Backend()
    stats = _Stats()
    tasks: list[asyncio.Task[None]] = []

    def run(work: Any, **_: Any) -> None:
        tasks.append(asyncio.get_running_loop().create_task(work()))

    live = LiveView(backend, table=None, stats=stats, run=run)  # type: ignore[arg-type]
    live.filter = parse("method:POST")
    live._count_stale = True
    live._count_if_due()  # the filter's count starts and blocks
    await _until(lambda: backend.asked == ["filter"], "the filter's count to start")
    live._mix.next_at = 0.0
    live._count.running = False  # let refresh_mix start the mix beside it ...
    live.refresh_mix()
    live._count.running = True  # ... while the filter's count is still running
    for _ in range(50):
        await asyncio.sleep(0)
    assert backend.asked == ["filter"], "the mix counted while a filter's count ran"
    assert stats.mix is None

    live._count.running = False  # the filter's count ends: the mix goes on without a pause
    for _ in range(50):  # a few turns of the loop, no timer: a polling wait would still be asleep
        if stats.mix is not None:
            break
        await asyncio.sleep(0)
    assert stats.mix == dict.fromkeys(STATUS_FILTERS, 1)
    backend.release["filter"].set()
    await asyncio.gather(*tasks)


async def test_the_rate_reads_the_last_whole_second_and_counts_a_request_once() -> None:
    """At a steady 100 requests a second the strip said ``29/s`` a third of a second into a
    second (the one still counting), and a request announced as it started and again as it
    ended counted twice."""
    from textual.app import App, ComposeResult

    from devtunnel.tui.widgets.stats import StatsStrip

    now = [1000.0]

    class Strip(App[None]):
        def compose(self) -> ComposeResult:
            yield StatsStrip(clock=lambda: now[0])

    app = Strip()
    async with app.run_test(size=(120, 3)) as pilot:
        stats = app.query_one(StatsStrip)
        live = LiveView(_Backend(), table=None, stats=stats, run=lambda *a, **k: None)  # type: ignore[arg-type]
        live._sourced = live._generation = 1
        live._start_apply = lambda ids, generation: None  # type: ignore[method-assign]  # only the count matters here
        live.changed([f"01KB{n:022d}" for n in range(100)])  # announced as they started
        live.flush()
        live.changed([f"01KB{n:022d}" for n in range(50)])  # half of them ended
        live.flush()
        now[0] = 1001.3
        live.changed(["01KB" + "9" * 22])
        live.flush()
        await pilot.pause()
        assert " 100/s" in str(stats.render())
