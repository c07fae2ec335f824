"""WebSocket close frames: which codes may travel in one and what stands in for the rest; how
long a reason it holds.

RFC 6455 section 7.4: 1005 (no status), 1006 (closed without a frame) and 1015 (TLS failure)
describe how a connection ended and must never be sent; 1004 and 1016-2999 are reserved. When
one side of a tunnelled WebSocket ends that way, the other side still gets a valid close frame:
1011 (the peer failed) for an abnormal end, 1000 for the rest. The relay and the agent both ask here.

Across the tunnel (a WS_CLOSE frame) 1006 travels as it is: it tells the other end that this
side's connection was lost without a close frame, which the record keeps; that end sends its
peer a valid code in its place.

A close frame's reason is at most 123 bytes of UTF-8 (RFC 6455 5.5: a control frame carries 125
bytes, 2 of them the code), while a WS_CLOSE may carry a megabyte: ``sendable_close_reason`` cuts
what a peer sent to what a close frame holds, at a character's end. A longer one made the
websockets library refuse to send the close at all, so the other side lost its connection
without a close frame (1006) instead of getting the close, and the agent logged a traceback.
"""

from __future__ import annotations

__all__ = [
    "ABNORMAL_CLOSURE", "MAX_CLOSE_REASON", "sendable_close_code", "sendable_close_reason", "tunnelled_close_code",
]

_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
_ABNORMAL = frozenset({1006, 1015})

ABNORMAL_CLOSURE = 1006
"""The connection was lost without a close frame (never sent in one)."""

MAX_CLOSE_REASON = 123
"""Bytes of UTF-8 a close frame's reason may hold (RFC 6455 5.5: 125 bytes of payload, 2 for the code)."""


def sendable_close_code(code: int) -> int:
    """``code`` if a close frame may carry it, else the code sent in its place (1011 or 1000)."""
    if code in _SENDABLE or 3000 <= code <= 4999:
        return code
    return 1011 if code in _ABNORMAL else 1000


def tunnelled_close_code(code: int) -> int:
    """The code a WS_CLOSE carries for a side that ended with ``code``: 1006 as it is, else
    ``sendable_close_code(code)``."""
    return code if code == ABNORMAL_CLOSURE else sendable_close_code(code)


def sendable_close_reason(reason: str) -> str:
    """``reason`` cut to what a close frame may carry: its first ``MAX_CLOSE_REASON`` bytes of
    UTF-8, never half a character (a reason that fits is returned as it is)."""
    if len(reason) <= MAX_CLOSE_REASON // 4:  # fits whatever its characters: no encoding
        return reason
    data = reason.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_CLOSE_REASON:
        return reason
    return data[:MAX_CLOSE_REASON].decode("utf-8", "ignore")
