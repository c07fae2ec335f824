"""The ``devtunnel-rule`` header: the relay's word to the agent on a request a rule decided.

One module for both ends (``docs/protocol.md``, "Rules"): the relay writes a notice with
``notice_value`` and a route with ``route_value`` (``relay/rules.py``); the agent reads either
with ``read_notice`` (``agent/relay_signals.py``).

A notice, ``SCOPE;INDEX;ACTION;STATUS;SIZE;BODY``: ``relay`` or ``tunnel``; the rule's number;
its action; the status the client was given (0: the connection was dropped); the bytes of body
it was sent (0 for HEAD or a drop); ``all`` when the notice carries the whole request body, else
that body's size as far as the relay knows it. Relays before SIZE wrote four fields and relays
before BODY five; a reader takes what is there and ignores fields after the ones it knows.
A route, ``tunnel;INDEX;forward``, is the first three fields alone.
"""

from __future__ import annotations

from typing import NamedTuple

from devtunnel.values.numbers import is_decimal

__all__ = ["RULE_HEADER", "Notice", "notice_value", "route_value", "read_notice", "MAX_ACTION"]

RULE_HEADER = b"devtunnel-rule"
"""The header's name, lowercase. The relay removes it from every public request first."""

MAX_ACTION = 32
"""Characters of the action a reader keeps."""
_MAX_SIZE_DIGITS = 18  # a size the header names: always an int, never a 4,300-digit parse
_SCOPES = ("relay", "tunnel")


class Notice(NamedTuple):
    """What a ``devtunnel-rule`` header says (``read_notice``)."""

    scope: str
    number: int
    """The rule's number in its scope."""
    action: str
    status: int
    """The status the client was given; 0: a dropped connection, a route, or not said."""
    size: int
    """The bytes of body the client was sent; 0 when not said."""
    body: int | None
    """The request body's size when the notice carries only part of it (maybe none of it); None
    when it carries all of it (``all``); -1 when the relay did not say (a relay before BODY)."""


def notice_value(scope: str, index: int, action: str, status: int, size: int, cut: int | None) -> bytes:
    """The header's value for a request a rule answered: ``cut`` None when the notice carries the
    whole request body, else the body's size as far as the relay knows it."""
    body = "all" if cut is None else str(cut)
    return f"{scope};{index};{action};{status};{size};{body}".encode()


def route_value(index: int) -> bytes:
    """The header's value for a request the tunnel's ``forward`` rule ``index`` routes."""
    return f"tunnel;{index};forward".encode()


def read_notice(value: bytes) -> Notice | None:
    """What ``value`` says, or None when it is not a notice or route this agent can read: no
    scope, number or action. A field it cannot read (a status past three digits, a size past
    18) reads as not said (0) rather than failing the record."""
    parts = value.decode("latin-1").split(";")
    if len(parts) < 3 or parts[0] not in _SCOPES or not _int(parts[1]) or not parts[2]:
        return None
    status = int(parts[3]) if len(parts) > 3 and is_decimal(parts[3]) and len(parts[3]) <= 3 else 0
    size = int(parts[4]) if len(parts) > 4 and _int(parts[4]) else 0
    body: int | None = -1
    if len(parts) > 5:
        field = parts[5]
        body = None if field == "all" else int(field) if _int(field) else 0
    return Notice(parts[0], int(parts[1]), parts[2][:MAX_ACTION], status, size, body)


def _int(text: str) -> bool:
    return is_decimal(text) and len(text) <= _MAX_SIZE_DIGITS
