"""The marks before an exchange's path wherever exchanges are listed: the inspector's table,
``devtunnel requests`` and its ``--follow``, and the agent's headless log line (a hot path, so
this module imports nothing)."""

from __future__ import annotations

__all__ = ["REPLAY_MARKS", "RULE_MARKS", "path_mark", "replay_mark"]


REPLAY_MARKS: tuple[tuple[str, str], ...] = (
    ("↻", "a replay"),
    ("↻✎", "a replay sent with changes (edited)"),
    ("↻s", "a replay whose webhook signature was made afresh (re-signed; ↻✎s when edited too)"),
)
"""What each mark of :func:`replay_mark` means, for the help screen."""


def replay_mark(row: object) -> str:
    """What goes before a replay's path in the inspector's table and ``devtunnel requests``.

    ``↻`` a replay, then ``✎`` when it was sent with changes, ``s`` when its webhook signature was
    made afresh (re-signed), and a space; ``""`` for an exchange that is not a replay. ``row`` is
    an ``Exchange`` or a store ``Row`` (both have ``replay_of``, ``edited`` and ``resigned``).
    Every mark is one cell wide in any terminal.
    """
    if not getattr(row, "replay_of", None):
        return ""
    return "↻" + ("✎" if getattr(row, "edited", False) else "") + ("s" if getattr(row, "resigned", None) else "") + " "


RULE_MARKS: tuple[tuple[str, str], ...] = (
    ("⊘", "answered by a rule at the relay"),
    ("→", "routed by a rule to another target"),
)
"""What each mark of :func:`path_mark` other than a replay's means, for the help screen."""


def path_mark(row: object) -> str:
    """What goes before an exchange's path wherever it is listed (the inspector's table,
    ``devtunnel requests`` and its ``--follow``): :func:`replay_mark` for a replay, else ``⊘ ``
    for a request a rule at the relay answered and ``→ `` for one it routed; ``""`` for others.
    ``row`` is an ``Exchange`` or a store ``Row`` (both have ``rule``)."""
    mark = replay_mark(row)
    if mark:
        return mark
    rule = getattr(row, "rule", None)
    if rule is None:
        return ""
    return ("→" if rule.action == "forward" else "⊘") + " "
