"""Stream states as a table: every legal transition of a stream is listed here.

A stream carries two messages, one per direction: the relay's request and the agent's response.
Each direction ("half") moves through its own small machine, driven by the frames sent in that
direction::

    IDLE --head--> BODY --data(END)--> DONE
      +--head(END)--> DONE --upgrade (101 on a WebSocket stream)--> WEBSOCKET --ws_close--> CLOSED
      +--head_upgrade (the agent's 101)--> WEBSOCKET
      +--interim head (1xx)--> IDLE

A WebSocket request has no body (its head ends the relay's half): body bytes still on their
way when the agent's 101 crossed them would land on a half that carries WebSocket messages.

A RESET from either side drops both halves at once (the stream is closed and forgotten).
The familiar HTTP/2-style state of a stream follows from its two halves (``stream_state``):
idle, open, half-closed (local), half-closed (remote), closed.
"""

from __future__ import annotations

import enum

from devtunnel.errors import ProtocolError, StreamClosedError


class Half(enum.Enum):
    """The state of one direction of a stream."""

    IDLE = "idle"  # no head yet (the response before the local service answered)
    BODY = "body"  # head sent; DATA may follow
    DONE = "done"  # END_STREAM sent: this HTTP message is complete
    WEBSOCKET = "websocket"  # the stream was upgraded: WS_MESSAGE frames flow
    CLOSED = "closed"  # WS_CLOSE sent: nothing more in this direction

    # Members are singletons: identity hashing keeps TRANSITIONS lookups off Enum's slow path.
    __hash__ = object.__hash__


class Action(enum.Enum):
    """What a frame (or the other direction's frame) does to one half."""

    HEAD = "head"  # REQUEST / RESPONSE without END_STREAM
    HEAD_END = "head_end"  # REQUEST / RESPONSE with END_STREAM
    INTERIM = "interim"  # a 1xx RESPONSE other than 101: a final head still follows
    HEAD_UPGRADE = "head_upgrade"  # a 101 RESPONSE on a WebSocket stream
    UPGRADE = "upgrade"  # the other direction sent HEAD_UPGRADE
    DATA = "data"  # DATA without END_STREAM
    DATA_END = "data_end"  # DATA with END_STREAM
    WS_MESSAGE = "ws_message"
    WS_CLOSE = "ws_close"

    __hash__ = object.__hash__


class StreamState(enum.Enum):
    """The HTTP/2-style state of a stream, seen from one end."""

    IDLE = "idle"
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    CLOSED = "closed"


# The members as module names, for the code run on every frame: ``Half.DONE`` goes through
# EnumType.__getattr__ (under Python 3.11, about 900 instructions against a global's few).
IDLE, BODY, DONE, WEBSOCKET, CLOSED = Half.IDLE, Half.BODY, Half.DONE, Half.WEBSOCKET, Half.CLOSED
HEAD, HEAD_END, INTERIM, HEAD_UPGRADE = Action.HEAD, Action.HEAD_END, Action.INTERIM, Action.HEAD_UPGRADE
DATA, DATA_END = Action.DATA, Action.DATA_END

TRANSITIONS: dict[tuple[Half, Action], Half] = {
    (IDLE, Action.HEAD): BODY,
    (IDLE, Action.HEAD_END): DONE,
    (IDLE, Action.INTERIM): IDLE,
    (IDLE, Action.HEAD_UPGRADE): WEBSOCKET,
    (BODY, Action.DATA): BODY,
    (BODY, Action.DATA_END): DONE,
    (DONE, Action.UPGRADE): WEBSOCKET,
    (WEBSOCKET, Action.WS_MESSAGE): WEBSOCKET,
    (WEBSOCKET, Action.WS_CLOSE): CLOSED,
}
"""(state of a half, action) -> next state. Anything not listed is a protocol error."""

FINISHED = frozenset({DONE, CLOSED})
"""Halves that will carry nothing more (unless a WebSocket upgrade reopens a DONE request)."""


def advance(half: Half, action: Action, stream_id: int, who: str) -> Half:
    """Return the next state of ``half`` after ``action``, or raise.

    Args:
        half: the current state of the direction the frame travels in.
        action: what the frame does.
        stream_id: for the error message.
        who: ``"we"`` or ``"the peer"``, for the error message.

    Raises:
        StreamClosedError: the direction already finished (data after END_STREAM or WS_CLOSE).
        ProtocolError: any other transition missing from ``TRANSITIONS``.
    """
    try:
        return TRANSITIONS[half, action]
    except KeyError:
        pass
    message = f"stream {stream_id}: {who} cannot send {action.value} when that side is {half.value}"
    if half in FINISHED:
        raise StreamClosedError(message)
    raise ProtocolError(message)


def head_action(status: int, end_stream: bool, websocket: bool) -> Action:
    """The action a response head with ``status`` performs on its half.

    Raises:
        ProtocolError: a 101 on a stream that did not ask for a WebSocket, or a 1xx that ends
            the stream.
    """
    if status == 101:
        if not websocket:
            raise ProtocolError("101 response on a stream that did not ask for a WebSocket")
        if end_stream:
            raise ProtocolError("101 response cannot end the stream")
        return HEAD_UPGRADE
    if status < 200:
        if end_stream:
            raise ProtocolError(f"interim {status} response cannot end the stream")
        return INTERIM
    return HEAD_END if end_stream else HEAD


def stream_state(local: Half, remote: Half) -> StreamState:
    """The HTTP/2-style state of a stream from the states of what we send and receive."""
    local_done = local in FINISHED
    remote_done = remote in FINISHED
    if local_done and remote_done:
        return StreamState.CLOSED
    if local_done:
        return StreamState.HALF_CLOSED_LOCAL
    if remote_done:
        return StreamState.HALF_CLOSED_REMOTE
    if local is IDLE and remote is IDLE:
        return StreamState.IDLE
    return StreamState.OPEN
