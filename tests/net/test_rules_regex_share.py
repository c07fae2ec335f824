"""One tunnel's rule regexes cannot take the relay from the others: a real relay, two tunnels, a
backtracking rule on one under load from kept-alive connections. What the hostile tunnel spent
is counted by a clock of the test's (each reading a step later), never timed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from devtunnel.rules import parse_rules
from tests.net.tunnel_fixtures import Harness, relay_and_agent
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)

HOSTILE = "/" + "a" * 40 + "!"
"""A path on which ``^/(a|aa)+$`` backtracks far past the bound of one request."""
SOCKETS = 4
REQUESTS = 15
"""Requests each kept-alive connection sends to the hostile tunnel, one after the other."""


class Ticks:
    """Monotonic seconds that move ``step`` on each reading: a regex search costs one step."""

    def __init__(self, start: float, step: float) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with relay_and_agent(tmp_path) as h:
        yield h


async def _statuses(harness: Harness, name: str, path: str, count: int) -> list[tuple[int, bytes]]:
    """``count`` GETs of ``path`` to tunnel ``name``, one after the other on one kept-alive connection."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=harness.base_url, headers={"Host": harness.host(name)}, trust_env=False,
                                 limits=limits, timeout=30) as client:
        out = []
        for _ in range(count):
            response = await client.get(path)
            out.append((response.status_code, response.content))
        return out


async def test_a_tunnels_backtracking_rule_under_load_spends_its_share_and_the_other_tunnel_is_answered(
    harness: Harness, local: tuple[int, object], caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    port, _ = local
    await harness.start(str(port), name="alpha")
    await harness.start(str(port), name="evil", rules=parse_rules(
        [{"match": 'path:~"^/(a|aa)+$"', "action": "respond", "status": 200}], "edge.toml"))
    engine = harness.relay.rules_of("evil")
    assert engine is not None and engine.meter is not None and harness.relay.rules_of("alpha") is None
    meter = engine.meter
    ticks = meter.clock = Ticks(start=10_000.0, step=0.01)
    own = meter.shares[0]
    with caplog.at_level(logging.WARNING, "devtunnel.relay"):
        *hostile, friendly = await asyncio.gather(
            *(_statuses(harness, "evil", HOSTILE, REQUESTS) for _ in range(SOCKETS)),
            _statuses(harness, "alpha", "/echo", 20),
        )
    answers = [a for batch in hostile for a in batch]
    # The other tunnel was answered all along.
    assert [status for status, _ in friendly] == [200] * 20
    # Every hostile request was refused, never let past the rule: its regex ran, and was stopped
    # for time, until the tunnel's share was spent; after that it was answered without running.
    assert {status for status, _ in answers} == {503}
    ran = [body for _, body in answers if b"rule 1 could not decide in time" in body]
    unchecked = [body for _, body in answers if b"rule 1 was not checked: this tunnel's rules used up their share" in body]
    assert len(ran) == meter.runs and len(unchecked) == meter.refused and meter.runs + meter.refused == len(answers)
    # Each search costs one step: the share held, what it earned while the clock moved, and one into a debt.
    elapsed = ticks.now - 10_000.0
    assert own.burst / ticks.step <= meter.runs <= (own.burst + own.rate * elapsed) / ticks.step + 1
    assert meter.refused >= len(answers) // 2
    spent = [r.getMessage() for r in caplog.records if "used up their share" in r.getMessage()]
    assert len(spent) == 1 and spent[0].startswith("tunnel evil: this tunnel's rules used up their share")
    # Refilled (ten seconds later by its clock), the rule decides again: the path it answers.
    ticks.now += 10
    assert await _statuses(harness, "evil", "/aaaa", 1) == [(200, b"")]
    assert (await _statuses(harness, "alpha", "/echo", 1))[0][0] == 200
