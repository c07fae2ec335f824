"""The sans-IO tunnel connection: bytes in, events out; calls in, bytes to send out.

CONTRACT (implementation pending): the signatures and docstrings below are fixed; the bodies
are filled in by the protocol implementation. The asyncio layer (net/) only ever calls these.
"""

from __future__ import annotations

import enum

from devtunnel.protocol.events import Event, Fields

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_SIZE = 1 << 20  # largest frame payload accepted (bytes)
DEFAULT_INITIAL_WINDOW = 1 << 20  # per-stream flow-control window (bytes)
DEFAULT_MAX_STREAMS = 1024  # concurrent streams a relay may open on one agent


class Role(enum.Enum):
    """Which end of the tunnel this connection is."""

    RELAY = "relay"  # opens streams (one per public request), receives responses
    AGENT = "agent"  # receives requests, sends responses


class ErrorCode(enum.IntEnum):
    """Codes carried by RESET and GOAWAY frames."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    CANCEL = 2  # the public client went away / the stream is no longer wanted
    LOCAL_REFUSED = 3  # the local service refused the connection
    LOCAL_TIMEOUT = 4  # the local service did not answer in time
    LOCAL_ERROR = 5  # the local service broke the connection / sent invalid HTTP
    TOO_LARGE = 6  # a body exceeded a limit
    REFUSED_STREAM = 7  # too many concurrent streams
    AUTH_FAILED = 8  # GOAWAY: token refused (the agent must not retry)
    NAME_TAKEN = 9  # GOAWAY: the name belongs to another token (must not retry)
    UNSUPPORTED_VERSION = 10  # GOAWAY: no common protocol version
    SHUTTING_DOWN = 11  # GOAWAY: relay restarting; reconnect


class Connection:
    """One tunnel connection's protocol state, for either role. Does no IO.

    Usage (both roles): feed received bytes to ``receive_data`` and handle the events it
    returns; after any call, send ``data_to_send()`` to the peer (it batches every queued frame).
    """

    def __init__(
        self,
        role: Role,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        initial_window: int = DEFAULT_INITIAL_WINDOW,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        raise NotImplementedError

    # -- handshake ---------------------------------------------------------------
    def send_hello(self, token: str, name: str | None, info: dict[str, object] | None = None) -> None:
        """(agent) Queue the HELLO frame: versions spoken, token, wanted name, agent info."""
        raise NotImplementedError

    def send_welcome(self, name: str, url: str, info: dict[str, object] | None = None) -> None:
        """(relay) Accept the agent: the tunnel is ``name``, reachable at ``url``."""
        raise NotImplementedError

    def send_goaway(self, code: ErrorCode, reason: str) -> None:
        """Queue a GOAWAY; after it, only frames for already open streams may be sent."""
        raise NotImplementedError

    # -- streams -----------------------------------------------------------------
    def open_request(
        self,
        method: bytes,
        target: bytes,
        http_version: bytes,
        headers: Fields,
        *,
        end_stream: bool,
        remote_addr: str = "",
        scheme: str = "http",
        websocket: bool = False,
    ) -> int:
        """(relay) Open a stream carrying a public request head; returns its stream id."""
        raise NotImplementedError

    def send_response(
        self,
        stream_id: int,
        status: int,
        reason: bytes,
        headers: Fields,
        *,
        end_stream: bool,
        http_version: bytes = b"1.1",
    ) -> None:
        """(agent) Send the response head; 101 on a websocket stream accepts it."""
        raise NotImplementedError

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Send body bytes (split into frames as needed). Raises FlowControlError if ``len(data)``
        exceeds ``send_window(stream_id)``; raises StreamClosedError if the stream is closed."""
        raise NotImplementedError

    def send_ws_message(self, stream_id: int, data: bytes, *, text: bool, fin: bool = True) -> None:
        """Send a WebSocket message (or fragment); counts against the send window."""
        raise NotImplementedError

    def send_ws_close(self, stream_id: int, code: int, reason: str = "") -> None:
        """Close our side of a WebSocket stream."""
        raise NotImplementedError

    def reset_stream(self, stream_id: int, code: ErrorCode, reason: str = "") -> None:
        """Abandon a stream; a no-op if it is already closed."""
        raise NotImplementedError

    def send_window(self, stream_id: int) -> int:
        """Bytes we may still send on ``stream_id`` before a WindowUpdated event (0 if closed)."""
        raise NotImplementedError

    def acknowledge(self, stream_id: int, n: int) -> None:
        """Give ``n`` consumed bytes of credit back to the peer (batched into WINDOW_UPDATE)."""
        raise NotImplementedError

    def ping(self, payload: bytes = b"\0" * 8) -> None:
        """Queue a PING (8 bytes); the peer answers with a PongReceived event."""
        raise NotImplementedError

    # -- IO boundary -------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        """Feed received bytes (any split); return complete events. Raises ProtocolError."""
        raise NotImplementedError

    def data_to_send(self) -> bytes:
        """Every byte queued since the last call (may be empty)."""
        raise NotImplementedError

    @property
    def open_streams(self) -> int:
        """Number of streams not yet closed."""
        raise NotImplementedError
