"""What the relay decided, read by the agent: the rule that decided a request, and the GOAWAY
that ended a connection.

A request a rule at the relay answered (or routed) arrives with the relay's ``devtunnel-rule``
header naming the rule (``relay/rules.py`` writes it; ``docs/protocol.md``, "Rules");
``rule_of`` takes it off the head. ``goaway_error`` turns a GOAWAY into the error the tunnel
reports, and ``FINAL_GOAWAYS`` are those after which reconnecting cannot help.
"""

from __future__ import annotations

import dataclasses

from devtunnel.capture.model import RuleMark
from devtunnel.errors import AuthError, NameInUseError, NameTakenError, RelayUnreachableError, TunnelError
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import GoAway, RequestReceived

__all__ = ["rule_of", "goaway_error", "FINAL_GOAWAYS"]

_RULE_HEADER = b"devtunnel-rule"


def rule_of(head: RequestReceived) -> tuple[RequestReceived, RuleMark | None, int]:
    """The head without the relay's ``devtunnel-rule`` header, the rule it names, and the
    status the relay answered with (0: none, or the connection was dropped)."""
    value = None
    for name, v in head.headers:
        if name == _RULE_HEADER:
            value = v
            break
    if value is None:
        return head, None, 0
    head = dataclasses.replace(head, headers=tuple((n, v) for n, v in head.headers if n != _RULE_HEADER))
    parts = value.decode("latin-1").split(";")
    if len(parts) < 3 or parts[0] not in ("relay", "tunnel") or not parts[1].isdigit() or not parts[2]:
        return head, None, 0
    status = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() and len(parts[3]) <= 3 else 0
    return head, RuleMark(int(parts[1]), parts[2][:32], parts[0]), status


# GOAWAY codes after which reconnecting cannot help. NO_ERROR on a live connection means a relay
# older than NAME_IN_USE handed the name to another agent with the same token: taking it back
# would only start a tug of war between the two. (Newer relays say NAME_IN_USE, and only to a
# connection that is stale: that one reconnects, and waits while a live agent holds the name.)
FINAL_GOAWAYS = frozenset(
    (ErrorCode.AUTH_FAILED, ErrorCode.NAME_TAKEN, ErrorCode.UNSUPPORTED_VERSION, ErrorCode.NO_ERROR, ErrorCode.RULES_REFUSED)
)


def goaway_error(event: GoAway) -> TunnelError:
    """The error a GOAWAY from the relay means for the tunnel."""
    reason = event.reason or "no reason given"
    if event.code == ErrorCode.AUTH_FAILED:
        return AuthError(f"the relay refused the token: {reason}")
    if event.code == ErrorCode.NAME_TAKEN:
        return NameTakenError(f"the relay refused the tunnel name: {reason}")
    if event.code == ErrorCode.NAME_IN_USE:
        return NameInUseError(
            f"the relay refused the tunnel name: {reason}. Stop the agent using it, or pick another name"
            " (devtunnel http PORT --name OTHER-NAME, or no --name for a random one)"
        )
    if event.code == ErrorCode.UNSUPPORTED_VERSION:
        return TunnelError(f"the relay speaks another protocol version: {reason}")
    if event.code == ErrorCode.RULES_REFUSED:
        return TunnelError(f"the relay refused the tunnel's rules: {reason}")
    if event.code == ErrorCode.NO_ERROR:
        return TunnelError(f"the relay ended the tunnel: {reason}")
    return RelayUnreachableError(f"the relay turned the tunnel away: {reason}")
