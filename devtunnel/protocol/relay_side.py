"""The relay's end of a tunnel connection: what only the relay sends and receives.

The relay answers the agent's HELLO with WELCOME (or a GOAWAY), tells pool members how many
share their name (POOL), opens one stream per public request (REQUEST) and receives the
responses and the agent's RULES. Everything else is the shared ``Connection``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from devtunnel.errors import ProtocolError
from devtunnel.protocol import frames as f
from devtunnel.protocol import handshake as hs
from devtunnel.protocol.connection import Connection, ErrorCode, FrameHandler, Role, StreamRecord
from devtunnel.protocol.events import Event, Fields, Hello, ResponseReceived, RulesChanged
from devtunnel.protocol.handshake import PeerLimits
from devtunnel.protocol.state import BODY, DONE, FINISHED, IDLE, WEBSOCKET, Action, advance, head_action

__all__ = ["RelayConnection"]

_END_STREAM = f.END_STREAM


class RelayConnection(Connection):
    """The relay's end of one tunnel connection. Does no IO.

    Waits for the agent's HELLO (a ``Hello`` event), answers with ``send_welcome`` or refuses
    with ``send_goaway``, then opens a stream per public request with ``open_request``.
    """

    role: ClassVar[Role] = Role.RELAY
    _peer_handshake: ClassVar[str] = "HELLO"
    peer_info: Mapping[str, object] = MappingProxyType({})
    """The ``info`` of the agent's HELLO (empty before it came)."""

    def _role_handlers(self) -> dict[int, FrameHandler]:
        return {f.HELLO: self._on_hello, f.RESPONSE: self._on_response, f.RULES: self._on_rules}

    # -- handshake ---------------------------------------------------------------
    def send_welcome(self, name: str, url: str, info: dict[str, object] | None = None, *, pool: int | None = None) -> None:
        """Accept the agent: the tunnel is ``name``, reachable at ``url``; ``pool`` is the
        number of agents sharing it, for an agent that asked for a pool."""
        if not self._handshake_received:
            raise ProtocolError("WELCOME before the agent's HELLO")
        if self._handshake_sent or self._goaway_sent:
            raise ProtocolError("the agent was already answered")
        assert self.version is not None  # set when the HELLO arrived
        payload = hs.encode_welcome(self.version, name, url, self._settings.into(info), pool=pool)
        self._queue_head(f.WELCOME, 0, 0, payload)
        self._handshake_sent = True

    def send_pool(self, members: int) -> None:
        """Tell a pool member how many agents share its name now."""
        if not self._handshake_sent or self._goaway_sent:
            return
        self._out.append(f.frame(f.POOL, 0, 0, hs.encode_pool(members)))

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
        """Open a stream carrying a public request head; returns its stream id.

        Raises:
            ProtocolError: with ``code`` REFUSED_STREAM when the agent already has its maximum
                of concurrent streams or the connection is going away (answer 503); with
                ``code`` TOO_LARGE when the head exceeds the agent's head limit (answer 431);
                with ``code`` PROTOCOL_ERROR for a WebSocket request with a body (``end_stream``
                false): after the agent's 101 the stream carries WebSocket messages only, so
                body bytes still on their way would be refused. Nothing is queued and the
                connection stays usable.
            ValueError: a field is longer than the wire format allows.
        """
        if websocket and not end_stream:
            raise ProtocolError("a WebSocket request carries no body (open it with end_stream)")
        if not self._handshake_sent:
            raise ProtocolError("cannot open a stream before the handshake completed")
        if self._goaway_sent or self._goaway_received:
            raise ProtocolError("the tunnel connection is going away", code=ErrorCode.REFUSED_STREAM)
        limit = min(self._max_streams, self._peer.max_streams)
        if len(self._streams) >= limit:
            raise ProtocolError(f"the tunnel already carries {limit} streams", code=ErrorCode.REFUSED_STREAM)
        stream_id = self._last_stream_id + 2 if self._last_stream_id else 1
        if stream_id > f.MAX_STREAM_ID:
            raise ProtocolError("stream ids are exhausted; open a new connection", code=ErrorCode.REFUSED_STREAM)
        payload = f.encode_request(method, target, http_version, headers, remote_addr, scheme)
        flags = (_END_STREAM if end_stream else 0) | (f.WEBSOCKET if websocket else 0)
        self._queue_head(f.REQUEST, flags, stream_id, payload)
        self._last_stream_id = stream_id
        self._streams[stream_id] = StreamRecord(
            DONE if end_stream else BODY,
            IDLE,
            self.new_stream_window,
            self._initial_window,
            websocket,
        )
        return stream_id

    @property
    def streams_full(self) -> bool:
        """True while ``open_request`` would refuse a stream for the limit on concurrent streams."""
        return len(self._streams) >= min(self._max_streams, self._peer.max_streams)

    # -- frame handlers: (flags, stream_id, payload, events) -------------------------
    def _on_hello(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id:
            raise ProtocolError("HELLO frame on a stream other than 0")
        if self._handshake_received:
            raise ProtocolError("a second HELLO frame")
        hello = hs.decode_hello(payload)
        version = hs.choose_version(hello.versions, self._versions)
        self._peer = PeerLimits.from_info(hello.info)
        self.peer_info = hello.info
        self.version = version
        self._handshake_done()
        events.append(Hello(self.version, hello.token, hello.name, hello.info, hello.instance, hello.pool, hello.rules))

    def _on_rules(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id:
            raise ProtocolError("RULES frame on a stream other than 0")
        events.append(RulesChanged(hs.decode_rules(payload)))

    def _on_response(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        stream = self._stream_for(stream_id, "RESPONSE")
        if stream is None:
            return
        status, version, reason, headers = f.decode_response(payload)
        end_stream = bool(flags & _END_STREAM)
        remote = advance(stream.remote, head_action(status, end_stream, stream.websocket), stream_id, "the peer")
        if remote is WEBSOCKET:
            stream.local = advance(stream.local, Action.UPGRADE, stream_id, "we")
        stream.remote = remote
        if remote is DONE and stream.local in FINISHED:
            del self._streams[stream_id]
        events.append(ResponseReceived(stream_id, status, reason, headers, end_stream, version))
