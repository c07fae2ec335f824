"""The agent's end of a tunnel connection: what only the agent sends and receives.

The agent introduces itself with HELLO, waits for the relay's WELCOME, replaces its rules at
the relay (RULES), learns how many agents share its name (POOL), accepts the streams the relay
opens (REQUEST) and answers each with a response head. Everything else is the shared
``Connection``.
"""

from __future__ import annotations

from typing import ClassVar

from devtunnel.errors import ProtocolError
from devtunnel.protocol import frames as f
from devtunnel.protocol import handshake as hs
from devtunnel.protocol.connection import Connection, ErrorCode, FrameHandler, Role, StreamRecord
from devtunnel.protocol.events import Event, Fields, PoolChanged, RequestReceived, Welcome
from devtunnel.protocol.handshake import PeerLimits
from devtunnel.protocol.state import BODY, DONE, FINISHED, IDLE, WEBSOCKET, Action, advance, head_action

__all__ = ["AgentConnection"]

_END_STREAM = f.END_STREAM


class AgentConnection(Connection):
    """The agent's end of one tunnel connection. Does no IO.

    Starts with ``send_hello``; once the ``Welcome`` event arrives, answers each
    ``RequestReceived`` with ``send_response`` and the body with ``send_data``.
    """

    role: ClassVar[Role] = Role.AGENT
    _peer_handshake: ClassVar[str] = "WELCOME"

    def _role_handlers(self) -> dict[int, FrameHandler]:
        return {f.WELCOME: self._on_welcome, f.REQUEST: self._on_request, f.POOL: self._on_pool}

    # -- handshake ---------------------------------------------------------------
    def send_hello(
        self,
        token: str,
        name: str | None,
        info: dict[str, object] | None = None,
        *,
        instance: str | None = None,
        pool: bool = False,
        rules: dict[str, object] | None = None,
    ) -> None:
        """Queue the HELLO frame: versions spoken, token, wanted name, agent info.

        ``info`` is sent as given, plus this side's limits (the fields of ``PeerLimits``).
        ``instance`` identifies this running agent across its reconnections (``docs/protocol.md``);
        ``pool`` asks to share the name with other agents of the same token.
        ``rules`` are the rules the relay must enforce (``{"version": N, "list": [...]}``).

        Raises:
            ValueError: ``instance`` is not a valid instance id.
        """
        if self._handshake_sent:
            raise ProtocolError("HELLO was already sent")
        if instance is not None:
            hs.check_instance(instance)
        payload = hs.encode_hello(self._versions, token, name, self._settings.into(info), instance, pool=pool, rules=rules)
        self._queue_head(f.HELLO, 0, 0, payload)
        self._handshake_sent = True

    def send_rules(self, rules: dict[str, object]) -> None:
        """Replace the tunnel's rules at the relay (``{"version": N, "list": [...]}``).

        Only to a relay that acknowledged rules in its WELCOME: older relays skip the frame.
        """
        if not self.handshake_complete:
            raise ProtocolError("RULES before the handshake completed")
        self._queue_head(f.RULES, 0, 0, hs.encode_rules(rules))

    # -- streams -----------------------------------------------------------------
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
        """Send the response head; 101 on a websocket stream accepts it.

        A 1xx status other than 101 is an interim response: a final one must follow.

        Raises:
            StreamClosedError: the stream is closed or its response was already sent.
            ProtocolError: the status does not fit the stream (101 on a plain HTTP stream), or
                (``code`` TOO_LARGE) the head exceeds the relay's head limit.
            ValueError: the status is not 100-999 or a field is too long for the wire format.
        """
        if not 100 <= status <= 999:
            raise ValueError(f"response status {status} is not a 3-digit HTTP status")
        stream = self._open_stream(stream_id)
        action = head_action(status, end_stream, stream.websocket)
        local = advance(stream.local, action, stream_id, "we")
        remote = advance(stream.remote, Action.UPGRADE, stream_id, "the peer") if local is WEBSOCKET else None
        payload = f.encode_response(status, reason, http_version, headers)
        self._queue_head(f.RESPONSE, _END_STREAM if end_stream else 0, stream_id, payload)
        stream.local = local
        if remote is not None:
            stream.remote = remote
        if local is DONE and stream.remote in FINISHED:
            del self._streams[stream_id]

    # -- frame handlers: (flags, stream_id, payload, events) -------------------------
    def _on_welcome(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id:
            raise ProtocolError("WELCOME frame on a stream other than 0")
        if not self._handshake_sent:
            raise ProtocolError("WELCOME before HELLO was sent")
        if self._handshake_received:
            raise ProtocolError("a second WELCOME frame")
        welcome = hs.decode_welcome(payload, self._versions)
        self._peer = PeerLimits.from_info(welcome.info)
        self.version = welcome.version
        self._handshake_done()
        events.append(Welcome(welcome.version, welcome.name, welcome.url, welcome.info, welcome.pool))

    def _on_pool(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id:
            raise ProtocolError("POOL frame on a stream other than 0")
        events.append(PoolChanged(hs.decode_pool(payload)))

    def _on_request(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id in self._streams:
            raise ProtocolError(f"REQUEST frame on stream {stream_id}, which is already open")
        if not stream_id & 1 or stream_id <= self._last_stream_id:
            raise ProtocolError(
                f"REQUEST frame on stream {stream_id}: streams are opened with odd, increasing ids"
                f" (the last was {self._last_stream_id})"
            )
        method, target, version, scheme, remote_addr, headers = f.decode_request(payload)
        self._last_stream_id = stream_id
        end_stream = bool(flags & _END_STREAM)
        if flags & f.WEBSOCKET and not end_stream:
            raise ProtocolError(f"REQUEST frame on stream {stream_id}: a WebSocket request with a body")
        if self._goaway_sent or len(self._streams) >= self._max_streams:
            # Refuse without failing the connection; the relay answers its client with 503.
            self._remember_reset(stream_id)
            self._reply(f.frame(f.RESET, 0, stream_id, f.U32.pack(ErrorCode.REFUSED_STREAM)))
            return
        websocket = bool(flags & f.WEBSOCKET)
        self._streams[stream_id] = StreamRecord(
            IDLE,
            DONE if end_stream else BODY,
            self.new_stream_window,
            self._initial_window,
            websocket,
        )
        events.append(
            RequestReceived(stream_id, method, target, version, headers, end_stream, remote_addr, scheme, websocket)
        )
