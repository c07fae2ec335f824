"""A tunnel's share of the relay's time for its rules' regexes (``rules.share``), counted by a
clock of the test's: a regex here costs what the test says, by that clock, never by timing."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from devtunnel.capture.filters.fields import PathRegex
from devtunnel.capture.model import Exchange
from devtunnel.relay.rules import RuleBook
from devtunnel.rules import Engine, RequestView, Rule, decide, parse_rules
from devtunnel.rules.model import uses_regex
from devtunnel.rules.share import TOKEN_BURST, TOKEN_RATE, TUNNEL_BURST, RegexMeter, TimeShare


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CostlyRegex(PathRegex):
    """A path regex that takes ``cost`` seconds of ``clock`` each time it runs."""

    def __init__(self, pattern: str, clock: Clock, cost: float) -> None:
        super().__init__(pattern)
        self.clock = clock
        self.cost = cost
        self.calls = 0

    def __call__(self, ex: Exchange) -> bool:
        self.calls += 1
        self.clock.now += self.cost
        return super().__call__(ex)


class Link:
    """What the rule book knows of an agent's connection: its name and token."""

    def __init__(self, name: str, token: str = "t0") -> None:
        self.name = name
        self.token = token


def costly(clock: Clock, cost: float, *tables: dict[str, Any]) -> tuple[Rule, ...]:
    """Rules from ``tables``, each ``path:~`` match made a ``CostlyRegex`` of that pattern."""
    rules = parse_rules(list(tables), "edge.toml")
    return tuple(
        dataclasses.replace(r, filter=CostlyRegex(r.filter.user_pattern, clock, cost)) if isinstance(r.filter, PathRegex) else r
        for r in rules
    )


def view(path: str = "/a") -> RequestView:
    return RequestView(method="GET", target=path.encode(), headers=[], ip="127.0.0.1")


SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/a", "raw_path": b"/a", "query_string": b"",
                         "headers": [], "client": ("127.0.0.1", 1)}


def scope(path: str = "/a") -> dict[str, Any]:
    return {**SCOPE, "path": path, "raw_path": path.encode(), "extensions": {}}


def test_a_time_share_earns_its_rate_holds_its_burst_and_pays_a_debt_first() -> None:
    share = TimeShare(rate=0.05, burst=0.1, owner="this tunnel's rules")
    assert share.level(0.0) == 0.1
    share.spend(0.3, 0.0)
    assert share.level(0.0) == pytest.approx(-0.2) and share.wait(0.0) == pytest.approx(4.0)
    assert share.level(2.0) == pytest.approx(-0.1)
    assert share.level(1.0) == pytest.approx(-0.1)  # a clock read out of order earns nothing
    assert share.wait(6.0) == 0 and share.level(1000.0) == 0.1
    with pytest.raises(ValueError, match="a time share needs a rate and a burst above 0, not 0 and 0.1"):
        TimeShare(0, 0.1, "x")


def test_a_tunnels_regexes_run_until_its_share_is_spent_then_answer_503_without_running() -> None:
    clock = Clock()
    rules = costly(clock, 0.02, {"match": 'path:~"^/a"', "action": "respond", "status": 200})
    meter = RegexMeter([TimeShare(0.05, 0.1, "this tunnel's rules")], clock)
    engine = Engine(rules, meter=meter)
    flt = rules[0].filter
    assert isinstance(flt, CostlyRegex)
    statuses = [decide([engine], view(), 0).answer for _ in range(8)]
    # 0.1 s held, 0.02 s a search (0.001 s earned while it runs): six run, the sixth into a debt.
    assert [a.status for a in statuses if a is not None] == [200] * 6 + [503] * 2
    assert meter.runs == flt.calls == 6 and meter.refused == 2
    refused = decide([engine], view(), 0)
    assert refused.unchecked and refused.rule == ("tunnel", 1, "respond") and refused.answer is not None
    assert refused.answer.body == (b"the tunnel's rule 1 was not checked: this tunnel's rules used up their share of the"
                                   b" relay's time for match regexes; try again in 1 s\n")
    assert (b"retry-after", b"1") in refused.answer.headers and flt.calls == 6
    clock.now += 1.0  # 0.05 s earned: the debt paid, the next search runs
    assert decide([engine], view(), 0).answer.status == 200  # type: ignore[union-attr]
    assert meter.runs == flt.calls == 7


def test_a_rule_without_a_regex_is_neither_counted_nor_refused_when_the_share_is_spent() -> None:
    clock = Clock()
    rules = costly(clock, 1.0, {"match": "path:/admin", "action": "deny"},
                   {"match": 'path:~"^/a"', "action": "respond", "status": 200}, {"action": "rate-limit", "rate": "1/s"})
    assert [uses_regex(r) for r in rules] == [False, True, False]
    meter = RegexMeter([TimeShare(0.05, 0.1, "this tunnel's rules")], clock)
    engine = Engine(rules, meter=meter)
    assert decide([engine], view(), 0).answer.status == 200  # type: ignore[union-attr]  # 1 s taken: spent for 18 s
    assert decide([engine], view("/admin"), 0).answer.status == 403  # type: ignore[union-attr]
    spent = decide([engine], view("/b"), 0)
    assert spent.unchecked and spent.rule == ("tunnel", 2, "respond") and spent.answer is not None
    assert (b"retry-after", b"18") in spent.answer.headers
    assert meter.runs == 1 and meter.refused == 1


def test_the_tunnels_of_one_token_share_a_budget_besides_their_own() -> None:
    clock = Clock()
    book = RuleBook(clock=clock)
    tunnels = [Link(f"t{n}") for n in range(8)]
    costs = {}
    for link in tunnels:
        rules = costly(clock, 0.02, {"match": 'path:~"^/a"', "action": "respond", "status": 200})
        book.add(link, rules)  # type: ignore[arg-type]
        costs[link.name] = rules[0].filter
    answers = [book.judge(link, scope()) for _ in range(6) for link in tunnels]  # type: ignore[arg-type]
    ran = sum(f.calls for f in costs.values())  # type: ignore[union-attr]
    # Each tunnel alone could run 5 (0.1 s); together they stop at the token's 0.25 s, and what it
    # earned meanwhile, and one search into a debt.
    assert ran * 0.02 <= TOKEN_BURST + TOKEN_RATE * ran * 0.02 + 0.02
    assert ran < len(tunnels) * TUNNEL_BURST / 0.02
    refused = [a for a in answers if a is not None and a.unchecked]
    assert len(refused) == len(answers) - ran
    assert refused[-1].answer is not None
    assert b"the rules of all the tunnels of its token used up their share" in refused[-1].answer.body
    other = Link("t0", token="t1")  # another token's tunnel of the same name: a share of its own
    book.add(other, costly(clock, 0.02, {"match": 'path:~"^/a"', "action": "respond", "status": 200}))  # type: ignore[arg-type]
    assert book.judge(other, scope()).answer.status == 200  # type: ignore[arg-type, union-attr]


def test_a_tunnels_share_is_kept_across_its_agents_reconnections_and_rule_changes() -> None:
    clock = Clock()
    book = RuleBook(clock=clock)
    first = Link("evil")
    book.add(first, costly(clock, 1.0, {"match": 'path:~"^/a"', "action": "deny"}))  # type: ignore[arg-type]
    assert book.judge(first, scope()).answer.status == 403  # type: ignore[arg-type, union-attr]
    book.remove(first)  # type: ignore[arg-type]
    again = Link("evil")
    book.add(again, costly(clock, 1.0, {"match": 'path:~"^/a"', "action": "deny"}))  # type: ignore[arg-type]
    assert book.judge(again, scope()).unchecked  # type: ignore[arg-type, union-attr]
    book.change(again, costly(clock, 1.0, {"match": 'path:~"^/b"', "action": "deny"}))  # type: ignore[arg-type]
    assert book.judge(again, scope("/b")).unchecked  # type: ignore[arg-type, union-attr]
    engine = book.engine(again)  # type: ignore[arg-type]
    assert engine is not None and engine.meter is not None and engine.meter.refused == 2


def test_shares_of_tunnels_gone_are_kept_at_most_max_meters() -> None:
    clock = Clock()
    book = RuleBook(clock=clock, max_meters=1)
    spent = Link("a", token="ta")
    book.add(spent, costly(clock, 1.0, {"match": 'path:~"^/a"', "action": "deny"}))  # type: ignore[arg-type]
    book.judge(spent, scope())  # type: ignore[arg-type]
    book.remove(spent)  # type: ignore[arg-type]
    book.add(Link("b", token="tb"), costly(clock, 1.0, {"match": 'path:~"^/a"', "action": "deny"}))  # type: ignore[arg-type]
    back = Link("a", token="ta")  # a's share (and its token's) made room for b's: it starts afresh
    book.add(back, costly(clock, 1.0, {"match": 'path:~"^/a"', "action": "deny"}))  # type: ignore[arg-type]
    assert book.judge(back, scope()).answer.status == 403  # type: ignore[arg-type, union-attr]


def test_a_tunnel_without_regexes_has_no_meter() -> None:
    book = RuleBook()
    link = Link("plain")
    book.add(link, parse_rules([{"match": "path:/admin", "action": "deny"}], "t"))  # type: ignore[arg-type]
    engine = book.engine(link)  # type: ignore[arg-type]
    assert engine is not None and engine.meter is None


def test_a_spent_share_is_said_once_an_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    book = RuleBook(clock=clock)
    link = Link("evil")
    book.add(link, costly(clock, 1.0, {"match": 'path:~"^/a"', "action": "deny"}))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "devtunnel.relay"):
        for _ in range(5):
            book.judge(link, scope())  # type: ignore[arg-type]
        clock.now += 9.0
        book.judge(link, scope())  # type: ignore[arg-type]
        clock.now += 1.0
        book.judge(link, scope())  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records if "share of the relay's time" in r.getMessage()]
    assert lines == [
        "tunnel evil: this tunnel's rules used up their share of the relay's time for match regexes (50 ms a second);"
        " requests answered 503 without running one since the last such line: 1 (it refills in 18.0 s)",
        "tunnel evil: this tunnel's rules used up their share of the relay's time for match regexes (50 ms a second);"
        " requests answered 503 without running one since the last such line: 5 (it refills in 8.0 s)",
    ]
