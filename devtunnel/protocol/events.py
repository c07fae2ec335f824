"""Events the sans-IO tunnel connection produces from received bytes.

Every event is a frozen dataclass. Header lists are raw ``(name, value)`` byte pairs in order.

The events made for every request (``RequestReceived``, ``ResponseReceived``, ``DataReceived``,
``WindowUpdated``) have an ``__init__`` of their own with the signature ``dataclass`` would
give them: a frozen dataclass's sets each field through ``object.__setattr__``, about 1,300
instructions a field; the slots' own setters (``_slot_setters``) take half that. Frozen they
stay: assigning to a field raises ``FrozenInstanceError``. tests/protocol/test_events.py holds
each to the ``__init__`` dataclass makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from collections.abc import Callable
from typing import Any

Fields = tuple[tuple[bytes, bytes], ...]


def _slot_setters(cls: type) -> tuple[Callable[[Any, Any], None], ...]:
    """The ``__set__`` of the slot of each of ``cls``'s fields, in the fields' order."""
    return tuple(cls.__dict__[f.name].__set__ for f in fields(cls))


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of all events."""


@dataclass(frozen=True, slots=True)
class Hello(Event):
    """The agent introduced itself (relay side receives it first on every connection)."""

    version: int
    token: str = field(repr=False)  # a secret: kept out of every message and log that shows the event
    name: str | None
    info: dict[str, Any] = field(default_factory=dict)
    instance: str | None = None
    """The agent instance id: the same for every connection of one running tunnel (None from
    agents that send none). Tells an agent coming back after a network drop from another
    agent asking for the same name."""
    pool: bool = False
    """The agent asks to share ``name`` with the other agents of its token that ask the same."""
    rules: dict[str, Any] | None = field(default=None, repr=False)
    """The rules the agent asks the relay to enforce: ``{"version": N, "list": [...]}`` (not in
    the repr: a basic-auth rule carries its users' passwords)."""


@dataclass(frozen=True, slots=True)
class Welcome(Event):
    """The relay accepted the agent (agent side): the tunnel is up under ``name`` at ``url``."""

    version: int
    name: str
    url: str
    info: dict[str, Any] = field(default_factory=dict)
    pool: int | None = None
    """Agents sharing the name now, this one included, when the agent asked for a pool; None
    when the relay said nothing of pools (one that does not know them)."""


@dataclass(frozen=True, slots=True)
class PoolChanged(Event):
    """The agents sharing this tunnel's name changed (agent side, members of a pool only)."""

    members: int


@dataclass(frozen=True, slots=True)
class GoAway(Event):
    """The peer is closing the connection, with a reason meant for a person."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True, init=False)
class RequestReceived(Event):
    """A public request opened a new stream (agent side)."""

    stream_id: int
    method: bytes
    target: bytes
    http_version: bytes
    headers: Fields
    end_stream: bool
    """True when the request has no body."""
    remote_addr: str = ""
    scheme: str = "http"
    websocket: bool = False
    """True for a WebSocket upgrade: answer with a 101 response, then WebSocket frames."""

    def __init__(
        self,
        stream_id: int,
        method: bytes,
        target: bytes,
        http_version: bytes,
        headers: Fields,
        end_stream: bool,
        remote_addr: str = "",
        scheme: str = "http",
        websocket: bool = False,
    ) -> None:
        s_id, s_method, s_target, s_version, s_headers, s_end, s_remote, s_scheme, s_ws = _REQUEST_RECEIVED
        s_id(self, stream_id)
        s_method(self, method)
        s_target(self, target)
        s_version(self, http_version)
        s_headers(self, headers)
        s_end(self, end_stream)
        s_remote(self, remote_addr)
        s_scheme(self, scheme)
        s_ws(self, websocket)


_REQUEST_RECEIVED = _slot_setters(RequestReceived)


@dataclass(frozen=True, slots=True, init=False)
class ResponseReceived(Event):
    """The local service's response head (relay side). A 101 accepts a WebSocket stream."""

    stream_id: int
    status: int
    reason: bytes
    headers: Fields
    end_stream: bool
    http_version: bytes = b"1.1"

    def __init__(
        self, stream_id: int, status: int, reason: bytes, headers: Fields, end_stream: bool,
        http_version: bytes = b"1.1",
    ) -> None:
        s_id, s_status, s_reason, s_headers, s_end, s_version = _RESPONSE_RECEIVED
        s_id(self, stream_id)
        s_status(self, status)
        s_reason(self, reason)
        s_headers(self, headers)
        s_end(self, end_stream)
        s_version(self, http_version)


_RESPONSE_RECEIVED = _slot_setters(ResponseReceived)


@dataclass(frozen=True, slots=True, init=False)
class DataReceived(Event):
    """A chunk of body. Give credit back with ``Connection.acknowledge`` once it is consumed."""

    stream_id: int
    data: bytes
    end_stream: bool

    def __init__(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        s_id, s_data, s_end = _DATA_RECEIVED
        s_id(self, stream_id)
        s_data(self, data)
        s_end(self, end_stream)


_DATA_RECEIVED = _slot_setters(DataReceived)


@dataclass(frozen=True, slots=True)
class WebSocketMessageReceived(Event):
    """A WebSocket message fragment (``fin`` marks the last fragment of a message)."""

    stream_id: int
    data: bytes
    text: bool
    fin: bool = True


@dataclass(frozen=True, slots=True)
class WebSocketClosed(Event):
    """One side of a WebSocket stream closed with a close code."""

    stream_id: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True, init=False)
class WindowUpdated(Event):
    """The peer gave ``increment`` more bytes of send credit on ``stream_id``."""

    stream_id: int
    increment: int

    def __init__(self, stream_id: int, increment: int) -> None:
        s_id, s_increment = _WINDOW_UPDATED
        s_id(self, stream_id)
        s_increment(self, increment)


_WINDOW_UPDATED = _slot_setters(WindowUpdated)


@dataclass(frozen=True, slots=True)
class StreamReset(Event):
    """The peer abandoned a stream (``code`` is an ``ErrorCode``)."""

    stream_id: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class RulesChanged(Event):
    """(relay) The agent replaced its tunnel's rules: ``{"version": N, "list": [...]}``."""

    rules: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PingReceived(Event):
    """The peer pinged (a pong was queued automatically)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PongReceived(Event):
    """Answer to one of our pings."""

    payload: bytes
