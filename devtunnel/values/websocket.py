"""WebSocket close codes: which may travel in a close frame, and what stands in for the rest.

RFC 6455 section 7.4: 1005 (no status), 1006 (closed without a frame) and 1015 (TLS failure)
describe how a connection ended and must never be sent; 1004 and 1016-2999 are reserved. When
one side of a tunnelled WebSocket ends that way, the other side still gets a valid close frame:
1011 (the peer failed) for an abnormal end, 1000 for the rest. The relay and the agent both ask here.

Across the tunnel (a WS_CLOSE frame) 1006 travels as it is: it tells the other end that this
side's connection was lost without a close frame, which the record keeps; that end sends its
peer a valid code in its place.
"""

from __future__ import annotations

__all__ = ["ABNORMAL_CLOSURE", "sendable_close_code", "tunnelled_close_code"]

_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
_ABNORMAL = frozenset({1006, 1015})

ABNORMAL_CLOSURE = 1006
"""The connection was lost without a close frame (never sent in one)."""


def sendable_close_code(code: int) -> int:
    """``code`` if a close frame may carry it, else the code sent in its place (1011 or 1000)."""
    if code in _SENDABLE or 3000 <= code <= 4999:
        return code
    return 1011 if code in _ABNORMAL else 1000


def tunnelled_close_code(code: int) -> int:
    """The code a WS_CLOSE carries for a side that ended with ``code``: 1006 as it is, else
    ``sendable_close_code(code)``."""
    return code if code == ABNORMAL_CLOSURE else sendable_close_code(code)
