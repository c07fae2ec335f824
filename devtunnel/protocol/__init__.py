"""The sans-IO tunnel protocol: bytes in, events out. No asyncio, no sockets.

``Connection`` is the whole API; ``docs/protocol.md`` describes the wire format.
"""

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
from devtunnel.protocol.handshake import Settings
from devtunnel.protocol.state import StreamState

__all__ = [
    "DEFAULT_INITIAL_WINDOW",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_HEAD_SIZE",
    "DEFAULT_MAX_STREAMS",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
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
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "Settings",
    "StreamReset",
    "StreamState",
    "WebSocketClosed",
    "WebSocketMessageReceived",
    "Welcome",
    "WindowUpdated",
]
