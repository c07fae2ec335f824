"""Passing one public WebSocket through a tunnel: the handshake goes to the agent as a request,
the client is accepted on its 101 (or sent its answer otherwise), then messages are pumped both
ways within the stream's send window.
"""

from __future__ import annotations

import asyncio
import logging

from devtunnel.errors import DevtunnelError, ProtocolError
from devtunnel.protocol.relay_side import RelayConnection
from devtunnel.protocol.events import Fields, WebSocketClosed
from devtunnel.relay.asgi import Receive, Scope, Send, client_ip, deny_websocket, protocol_of, request_problem, target
from devtunnel.relay.headers import (
    forward_request_headers,
    forward_response_headers,
    length_problem,
    scope_cookies,
    websocket_accept_headers,
)
from devtunnel.relay.http import RAW_HEADERS_EXTENSION
from devtunnel.relay.http_responses import invalid_header
from devtunnel.relay.link import AgentLink, RelayStream
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.rules import RuleBook, edit_request, edit_response, send_answer, strip_rule_header
from devtunnel.relay.slots import RETRY_AFTER_HEADER, ClientSlots, over_share
from devtunnel.relay.ws_guard import GuardedWebSocketProtocol
from devtunnel.rules import Decision
from devtunnel.values.websocket import sendable_close_code, sendable_close_reason, tunnelled_close_code

log = logging.getLogger("devtunnel.relay")


def _fields(scope: Scope, host: bytes, ip: str, proto: bytes) -> Fields:
    """The handshake's headers as they go to the agent, names in the client's case (uvicorn
    lowercases those of ``scope["headers"]``; ``RAW_HEADERS_EXTENSION`` holds them as sent)."""
    lowered = scope["headers"]
    raw = (scope.get("extensions") or {}).get(RAW_HEADERS_EXTENSION) or lowered
    return forward_request_headers(raw, host, ip.encode(), proto, websocket=True)

# Close codes that name a condition but may not be sent in a close frame (RFC 6455 7.4.1).
class WebSocketForwarder:
    """Passes public WebSocket connections through tunnels (one instance per relay)."""

    def __init__(
        self, *, proto: str, slots: ClientSlots, peer_errors: PeerErrorLog, rules: RuleBook | None = None
    ) -> None:
        self.rules = rules or RuleBook()
        self.proto = proto
        self.slots = slots
        self.peer_errors = peer_errors
        self._proto_bytes = b"https" if proto == "https" else b"http"

    async def __call__(self, tunnel: AgentLink, scope: Scope, receive: Receive, send: Send, host: bytes) -> None:
        """Open a WebSocket stream; accept the client on 101, else send the agent's answer."""
        try:
            await self._forward(tunnel, scope, receive, send, host)
        except OSError as exc:  # uvicorn's ClientDisconnected: the client left mid-handshake
            log.debug("tunnel %s: websocket client left: %r", tunnel.name, exc)

    async def _forward(self, tunnel: AgentLink, scope: Scope, receive: Receive, send: Send, host: bytes) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        problem = request_problem(scope)
        if problem is not None:
            await deny_websocket(send, 400, f"{problem}\n")
            return
        conn = tunnel.conn
        ip = client_ip(scope)
        decision = self.rules.judge(tunnel, scope)
        if decision is not None and decision.answer is not None:
            fields = _fields(scope, host, ip, self._proto_bytes)
            self.rules.notify(tunnel, scope, fields, decision)
            if decision.answer.drop:
                protocol = protocol_of(receive)
                transport = getattr(protocol, "transport", None)
                if transport is not None:
                    transport.abort()
                    return
            await send_answer(decision, scope, send, websocket=True)
            return
        if not self.slots.take(tunnel, ip):
            await deny_websocket(send, 429, over_share(tunnel, ip, self.slots, self.peer_errors), [RETRY_AFTER_HEADER])
            return
        try:
            await self._pass_through(tunnel, conn, scope, receive, send, host, ip, decision)
        finally:
            self.slots.give_back(tunnel, ip)

    async def _pass_through(
        self,
        tunnel: AgentLink,
        conn: RelayConnection,
        scope: Scope,
        receive: Receive,
        send: Send,
        host: bytes,
        ip: str,
        decision: Decision | None = None,
    ) -> None:
        raw = _fields(scope, host, ip, self._proto_bytes)
        fields = edit_request(raw, decision) if decision is not None else strip_rule_header(raw)
        try:
            stream_id = conn.open_request(
                b"GET", target(scope), b"1.1", fields, end_stream=True, remote_addr=self.rules.client_ip(scope),
                scheme=self.proto, websocket=True,
            )
        except (ProtocolError, ValueError) as exc:
            await deny_websocket(send, 503, f"tunnel {tunnel.name} cannot take requests: {exc}\n")
            return
        stream = RelayStream(stream_id, websocket=True)
        tunnel.open(stream)
        tunnel.flush()
        try:
            while stream.head is None:
                if stream.failure is not None:
                    await deny_websocket(send, 502, f"tunnel {tunnel.name} went offline before answering\n")
                    return
                await stream.wait()
            head = stream.head
            if head.status != 101:
                await self._deny_with_response(tunnel, stream, scope, send, host)
                return
            subprotocol, extra = websocket_accept_headers(head.headers)
            extra = scope_cookies(edit_response(extra, decision), host)
            refusal = invalid_header(self.peer_errors, tunnel, scope, extra)
            if refusal is not None:  # websockets would raise building the accept: a 500 and a traceback
                await deny_websocket(send, 502, refusal)
                return
            try:
                await send(
                    {
                        "type": "websocket.accept",
                        "subprotocol": subprotocol.decode("latin-1") if subprotocol else None,
                        "headers": extra,
                    }
                )
            except OSError:  # the client left while the local service was answering
                tunnel.forget(stream, complete=False)
                raise
            protocol = protocol_of(receive)
            if isinstance(protocol, GuardedWebSocketProtocol):
                stream.client = protocol  # closed with 1013 if the relay sheds the stream (AgentLink.shed)
            pump = asyncio.get_running_loop().create_task(self._client_to_agent(tunnel, stream, receive))
            try:
                await self._agent_to_client(tunnel, stream, send)
            finally:
                if not pump.done():
                    stream.client_gone = True
                    stream.wake_window()
                    # Let the client's close reply reach the agent, but do not wait forever.
                    try:
                        await asyncio.wait_for(pump, 10.0)
                    except asyncio.TimeoutError:
                        pass
        finally:
            tunnel.forget(stream, complete=True)

    async def _deny_with_response(self, tunnel: AgentLink, stream: RelayStream, scope: Scope, send: Send,
                                  host: bytes) -> None:
        head = stream.head
        assert head is not None
        headers = forward_response_headers(head.headers, length_allowed=True, host=host)
        if headers is None:
            await deny_websocket(send, 502, f"tunnel {tunnel.name} answered with {length_problem(head.headers)}\n")
            return
        refusal = invalid_header(self.peer_errors, tunnel, scope, headers)
        if refusal is not None:
            await deny_websocket(send, 502, refusal)
            return
        await send({"type": "websocket.http.response.start", "status": head.status, "headers": headers})
        while True:
            while stream.chunks:
                data = stream.chunks.popleft()
                if isinstance(data, bytes):
                    tunnel.taken(stream, len(data))
                    await send({"type": "websocket.http.response.body", "body": data, "more_body": True})
            if stream.ended or stream.failure is not None:
                break
            await stream.wait()
        await send({"type": "websocket.http.response.body", "body": b"", "more_body": False})

    async def _agent_to_client(self, tunnel: AgentLink, stream: RelayStream, send: Send) -> None:
        conn = tunnel.conn
        # The client is sent whole messages: a message's fragments are gathered here, credited
        # to the agent as they arrive (it could not send the rest otherwise), and still held
        # (``stream.held``, within the relay's ceilings) until their message goes: an agent
        # sending fragments that never end on many WebSockets is shed, not held without end.
        fragments: list[bytes] = []
        gathered = 0
        try:
            while True:
                while stream.chunks:
                    event = stream.chunks.popleft()
                    if isinstance(event, WebSocketClosed):
                        code = sendable_close_code(event.code)
                        await send({"type": "websocket.close", "code": code, "reason": sendable_close_reason(event.reason)})
                        return
                    if isinstance(event, bytes):  # body bytes on a WebSocket stream: ignore
                        tunnel.taken(stream, len(event))
                        continue
                    fragments.append(event.data)
                    if not event.fin:
                        gathered += len(event.data)
                    else:
                        data = fragments[0] if len(fragments) == 1 else b"".join(fragments)
                        fragments.clear()
                        tunnel.taken(stream, gathered + len(event.data))
                        gathered = 0
                        if event.text:
                            await send({"type": "websocket.send", "text": data.decode("utf-8", "replace")})
                        else:
                            await send({"type": "websocket.send", "bytes": data})
                    if not stream.client_gone and not tunnel.closed:
                        conn.acknowledge(stream.id, len(event.data))
                        tunnel.flush()
                if stream.client_gone:
                    return
                if stream.failure is not None:
                    fragments.clear()  # (counted off with the rest of the stream: when shed, or by forget)
                    await send({"type": "websocket.close", "code": 1011, "reason": "tunnel went offline"})
                    return
                await stream.wait()
        except DevtunnelError as exc:
            log.debug("tunnel %s: websocket stream %d ended: %s", tunnel.name, stream.id, exc)
        except Exception as exc:  # uvicorn raises ClientDisconnected once the client is gone
            log.debug("tunnel %s: websocket client of stream %d is gone: %r", tunnel.name, stream.id, exc)

    async def _client_to_agent(self, tunnel: AgentLink, stream: RelayStream, receive: Receive) -> None:
        try:
            await self._pump_client(tunnel, stream, receive)
        except DevtunnelError as exc:  # the stream closed under us
            log.debug("tunnel %s: websocket stream %d: %s", tunnel.name, stream.id, exc)

    async def _pump_client(self, tunnel: AgentLink, stream: RelayStream, receive: Receive) -> None:
        conn = tunnel.conn
        stream_id = stream.id
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                if not tunnel.closed and stream.failure is None:
                    code = tunnelled_close_code(int(message.get("code") or 1000))
                    conn.send_ws_close(stream_id, code, message.get("reason") or "")
                    tunnel.flush()
                stream.on_client_gone()
                return
            text = message.get("text")
            data: bytes = text.encode() if text is not None else message.get("bytes") or b""
            is_text = text is not None
            # One copy of the message is held while it waits for credit (ws_guard counts one):
            # its text is let go once encoded, and its fragments are cut from it where they start.
            del message, text
            sent = 0
            while True:
                if stream.failure is not None or tunnel.closed:
                    return
                window = tunnel.sendable(stream)  # 0: wait for credit or buffer room
                if len(data) - sent <= window:
                    conn.send_ws_message(stream_id, data[sent:] if sent else data, text=is_text, fin=True)
                    break
                if window:
                    conn.send_ws_message(stream_id, data[sent:sent + window], text=is_text, fin=False)
                    sent += window
                    tunnel.flush()
                await stream.wait_window()
            data = b""
            tunnel.flush()
