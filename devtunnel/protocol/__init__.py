"""The sans-IO tunnel protocol: bytes in, events out. No asyncio, no sockets.

Each end builds its own connection: ``RelayConnection`` (the relay) or ``AgentConnection``
(the agent), both a ``Connection`` (what the two ends share). ``docs/protocol.md`` describes the
wire format.
"""

from devtunnel.protocol.agent_side import AgentConnection
from devtunnel.protocol.connection import (
    DEFAULT_INITIAL_WINDOW,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HEAD_SIZE,
    DEFAULT_MAX_STREAMS,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Connection,
    ErrorCode,
    Role,
)
from devtunnel.protocol.events import (
    DataReceived,
    Event,
    Fields,
    GoAway,
    Hello,
    PingReceived,
    PongReceived,
    PoolChanged,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    WebSocketClosed,
    WebSocketMessageReceived,
    Welcome,
    WindowUpdated,
)
from devtunnel.protocol.handshake import PeerLimits
from devtunnel.protocol.relay_side import RelayConnection
from devtunnel.protocol.state import StreamState

__all__ = [
    "DEFAULT_INITIAL_WINDOW",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_HEAD_SIZE",
    "DEFAULT_MAX_STREAMS",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "AgentConnection",
    "Connection",
    "DataReceived",
    "ErrorCode",
    "Event",
    "Fields",
    "GoAway",
    "Hello",
    "PingReceived",
    "PongReceived",
    "PoolChanged",
    "RelayConnection",
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "PeerLimits",
    "StreamReset",
    "StreamState",
    "WebSocketClosed",
    "WebSocketMessageReceived",
    "Welcome",
    "WindowUpdated",
]
