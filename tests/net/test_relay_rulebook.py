"""``RuleBook.in_force``: the direct path asks the rules (and makes a request's scope for them)
only while it is True, so it must be True whenever ``judge`` could decide anything."""

from __future__ import annotations

from typing import Any

from devtunnel.relay.rules import RuleBook
from devtunnel.rules import parse_rules

SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/blocked", "raw_path": b"/blocked",
                         "query_string": b"", "headers": [], "client": ("127.0.0.1", 1), "extensions": {}}


def _scope() -> dict[str, Any]:
    return {**SCOPE, "extensions": {}}


def test_rules_are_in_force_exactly_while_some_apply_to_a_tunnel_or_the_relay() -> None:
    deny = parse_rules([{"match": "path:/blocked", "action": "deny"}], "test")
    book = RuleBook()
    one, two = object(), object()
    assert not book.in_force and book.judge(one, _scope()) is None  # type: ignore[arg-type]
    book.add(one, ())  # type: ignore[arg-type]  # an agent that knows rules, and sent none
    assert not book.in_force
    book.add(two, deny)  # type: ignore[arg-type]
    assert book.in_force and book.judge(two, _scope()) is not None  # type: ignore[arg-type]
    book.remove(one)  # type: ignore[arg-type]
    assert book.in_force
    book.remove(two)  # type: ignore[arg-type]
    assert not book.in_force and book.judge(two, _scope()) is None  # type: ignore[arg-type]


def test_relay_rules_are_always_in_force() -> None:
    book = RuleBook(parse_rules([{"match": "path:/blocked", "action": "deny"}], "relay.toml", relay=True))
    tunnel = object()
    assert book.in_force
    book.add(tunnel, parse_rules([{"match": "path:/x", "action": "deny"}], "test"))  # type: ignore[arg-type]
    book.remove(tunnel)  # type: ignore[arg-type]
    assert book.in_force and book.judge(tunnel, _scope()) is not None  # type: ignore[arg-type]
