"""WebSocket pass-through: a tunnel stream marked ``websocket`` becomes a client of the local service.

The agent opens its own WebSocket to the local service (with the public client's headers that
matter and its subprotocols, compression off), answers the relay with 101 or with the local
service's rejection, then copies text and binary messages both ways and the close code.

The record keeps the code of the side that began the closing handshake (the service may answer
the client's code with another), or 1006 with ``client_gone`` when the relay says the public
client's connection was lost without a close frame; a local service lost that way is 1006 with
``local_error``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus
from websockets.http11 import Request as WsRequest
from websockets.protocol import State

from devtunnel.errors import StreamClosedError
from devtunnel.agent.forward import answer_error, refusal
from devtunnel.agent.hold import NOT_LISTENING, HoldExpired, HoldGate
from devtunnel.agent.local_response import what_it_sent
from devtunnel.agent.recording import ExchangeCapture
from devtunnel.agent.stream import AgentStream
from devtunnel.agent.ws_client import connect_here
from devtunnel.values.target import Target
from devtunnel.protocol.events import Fields, RequestReceived, WebSocketClosed, WebSocketMessageReceived
from devtunnel.values.request_head import field_is_safe
from devtunnel.values.http1 import FRAMING, HOP_BY_HOP
from devtunnel.values.websocket import ABNORMAL_CLOSURE, sendable_close_code, sendable_close_reason

__all__ = ["MAX_MESSAGE", "forward_websocket"]

MAX_MESSAGE = 64 << 20
"""Largest WebSocket message gathered from its fragments for the local service: what a devtunnel
relay takes from a public client in one message (``relay.listening.WS_MAX_SIZE``). Fragments are
credited as they arrive (the local service takes whole messages only), so flow control does
not bound a message that never ends: past this, the WebSocket is closed with 1009."""

# Handshake and hop-by-hop fields the websockets client writes itself (or must not send).
_SKIP_REQUEST = HOP_BY_HOP | FRAMING | frozenset(
    (b"host", b"expect", b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
     b"sec-websocket-protocol")
)
_SKIP_RESPONSE = frozenset(
    (b"connection", b"upgrade", b"sec-websocket-accept", b"sec-websocket-extensions", b"sec-websocket-protocol",
     b"content-length", b"transfer-encoding")
)


def _connection_for(path: str, host: str | None, received: bytearray) -> type[ClientConnection]:
    """A client connection class whose handshake asks for ``path`` (and sends ``Host: host``).

    The URL given to ``connect`` is only the configured target's authority: the public
    request's target is never pasted into it, where text such as ``*@other:port/`` would
    name another host. It goes on the request line as it is (the session checked it is
    origin-form). ``host`` is the public Host, sent unless the tunnel rewrites it: apps that
    compare Origin with Host (Rails' Action Cable, Django Channels) refuse a handshake whose
    Host is the local address while its Origin is the public URL. The first bytes the service
    sends are kept in ``received``: one that answers with no HTTP at all (Next.js 16 refusing an
    Origin writes ``Unauthorized`` on the socket) is said in the 502.
    """

    class TargetConnection(ClientConnection):
        def data_received(self, data: bytes) -> None:
            if len(received) < 64:
                received.extend(data[:64 - len(received)])
            super().data_received(data)

        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            build = self.protocol.connect

            def connect() -> WsRequest:
                request = build()
                request.path = path
                if host is not None:
                    del request.headers["Host"]
                    request.headers["Host"] = host
                return request

            self.protocol.connect = connect  # type: ignore[method-assign]
            await super().handshake(*args, **kwargs)

    return TargetConnection


def _subprotocols(headers: Fields) -> list[str]:
    out: list[str] = []
    for name, value in headers:
        if name.lower() == b"sec-websocket-protocol":
            out += [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
    return out


async def forward_websocket(
    stream: AgentStream,
    head: RequestReceived,
    cap: ExchangeCapture,
    *,
    tunnel: str,
    target: Target,
    rewrite_host: bool = False,
    insecure: bool = False,
    connect_timeout: float = 10.0,
    gate: HoldGate | None = None,
) -> None:
    """Carry one WebSocket session between the relay stream and the local service.

    With a ``gate`` that holds (``--hold``), the opening handshake waits for the app as a request
    does (a dev server's live-reload socket reconnecting while the server restarts), on the
    connection the gate opened; past the hold it is answered 503.

    ``head.target`` must have passed ``values.request_head.head_problem`` (the session checks
    every request): it is sent as the handshake's request target, to ``target``'s address.
    The handshake carries the public client's Host unless ``rewrite_host``.
    """
    scheme = "wss" if target.tls else "ws"
    uri = f"{scheme}://{target.authority}/"
    path = target.request_target(head.target).decode("latin-1")
    headers = [
        (n.decode("latin-1"), v.decode("latin-1"))
        for n, v in head.headers
        if n.lower() not in _SKIP_REQUEST and field_is_safe(n, v)
    ]
    options: dict[str, Any] = {}
    public_host = next((v.decode("latin-1") for n, v in head.headers if n.lower() == b"host"), None)
    host = public_host if public_host and not rewrite_host else None
    received = bytearray()
    options["create_connection"] = _connection_for(path, host, received)
    if target.tls:
        ctx = ssl.create_default_context()
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        options["ssl"] = ctx
    if gate is not None and gate.hold > 0:
        try:
            options["sock"] = await gate.connect(lambda: _open_socket(target), cap)
        except HoldExpired as exc:
            await answer_error(stream, cap, 503, "app_restarting", f"{exc}\n", retry_after=gate.retry_after,
                               public=f"{exc.public}\n")
            return
        except OSError:
            pass  # the handshake below connects, and says why it cannot
    try:
        ws = await connect_here(
            uri,
            additional_headers=headers,
            user_agent_header=None,
            subprotocols=_subprotocols(head.headers) or None,  # type: ignore[arg-type]
            compression=None,
            proxy=None,
            open_timeout=connect_timeout,
            ping_interval=None,
            max_size=None,
            **options,
        )
    except InvalidStatus as exc:
        await _relay_rejection(stream, cap, exc)
        return
    except NOT_LISTENING:  # refused, or reset in a dying app's queue
        kind, message, public = await refusal(tunnel, target, gate)
        await answer_error(stream, cap, 502, kind, message, public=public)
        return
    except TimeoutError:
        await answer_error(stream, cap, 504, "local_timeout", f"the local service at {target.url} did not answer in time")
        return
    except (OSError, InvalidHandshake) as exc:
        sent = what_it_sent(bytes(received)) if isinstance(exc, InvalidMessage) and received else ""
        await answer_error(stream, cap, 502, "local_error", f"WebSocket handshake with {target.url} failed: {exc}{sent}")
        return
    try:
        _accept(stream, cap, ws)
        await _pump(stream, cap, ws)
    except StreamClosedError as exc:
        cap.fail("client_gone", str(exc))
    except asyncio.CancelledError:
        kind, why = stream.cut("while the WebSocket was open")
        cap.fail(kind, why)
        _going_away(ws, why)
        raise
    finally:
        if ws.close_code is None and ws.protocol.close_sent is None:
            ws.transport.abort()
        if cap.exchange.ws_close_code is None:
            cap.ws_closed(ws.close_code if ws.close_code is not None else _close_sent(ws))


async def _open_socket(target: Target) -> socket.socket:
    """A TCP connection to ``target`` for the handshake to use (``HoldGate.connect`` waits for it)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in target.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (target.host, target.port))
    except BaseException:
        sock.close()
        raise
    return sock


def _going_away(ws: ClientConnection, why: str) -> None:
    """Close the local WebSocket with 1001 (going away) and ``why`` at once, without waiting
    for its answer: the stream was cut (the relay connection lost, or the public client gone),
    and the local service is told so in a close frame rather than by a dropped connection."""
    if ws.protocol.state is not State.OPEN:
        return
    try:
        ws.protocol.send_close(1001, sendable_close_reason(why))
        ws.send_data()
    except Exception:  # the connection broke under us: the finally below aborts it
        return
    ws.transport.close()  # after the close frame is written


def _close_sent(ws: ClientConnection) -> int | None:
    sent = ws.protocol.close_sent
    return sent.code if sent is not None else None


def _accept(stream: AgentStream, cap: ExchangeCapture, ws: ClientConnection) -> None:
    fields: list[tuple[bytes, bytes]] = []
    if ws.response is not None:
        fields = [
            (n.encode("latin-1"), v.encode("latin-1"))
            for n, v in ws.response.headers.raw_items()
            if n.lower().encode("latin-1") not in _SKIP_RESPONSE
        ]
    if ws.subprotocol:
        fields.append((b"Sec-WebSocket-Protocol", ws.subprotocol.encode("latin-1")))
    cap.response_head(101, b"Switching Protocols", tuple(fields))
    stream.send_response(101, b"Switching Protocols", tuple(fields), end_stream=False)


async def _pump(stream: AgentStream, cap: ExchangeCapture, ws: ClientConnection) -> None:
    """Copy messages both ways until the local side is closed, then pass its close code on."""
    to_local = asyncio.create_task(_client_to_local(stream, cap, ws))
    try:
        while True:
            try:
                message = await ws.recv()
            except ConnectionClosed:
                break
            text = isinstance(message, str)
            data = message.encode("utf-8") if isinstance(message, str) else bytes(message)
            cap.ws_message("server", text, data)
            await stream.send_ws_message(data, text=text)
    finally:
        to_local.cancel()
        try:
            await to_local
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
        except ConnectionClosed:
            pass
    if ws.protocol.close_rcvd is None:  # (an error recorded first, client_gone say, stays)
        cap.fail("local_error", "the local service's connection was lost without a close frame")
    stream.send_ws_close(ws.close_code or 1006, ws.close_reason or "")


async def _client_to_local(stream: AgentStream, cap: ExchangeCapture, ws: ClientConnection) -> None:
    fragments: list[bytes] = []
    gathered = 0
    while True:
        event = await stream.events.get()
        if isinstance(event, WebSocketMessageReceived):
            fragments.append(event.data)
            gathered += len(event.data)
            if gathered > MAX_MESSAGE:
                # The local side closes with 1009; _pump passes that code on to the relay.
                await ws.close(1009, f"message larger than {MAX_MESSAGE >> 20} MiB")
                return
            if not event.fin:
                # The local service takes whole messages only: a message larger than the window
                # must be gathered here, so its fragments are credited as they arrive; they
                # still count as held (the session's ceiling) until the message went.
                stream.acknowledge(len(event.data), keep=True)
                continue
            data = fragments[0] if len(fragments) == 1 else b"".join(fragments)
            earlier = gathered - len(event.data)
            fragments = []
            gathered = 0
            cap.ws_message("client", event.text, data)
            await ws.send(data, text=event.text)
            stream.acknowledge(len(event.data))
            stream.release(earlier)
        elif isinstance(event, WebSocketClosed):
            if event.code == ABNORMAL_CLOSURE:
                cap.fail("client_gone", "the public client's connection was lost without a close frame")
            if ws.protocol.close_rcvd is None:
                # The client begins the closing handshake: the record keeps its code, not the
                # one the service answers with (aiohttp answers any close with 1000).
                cap.ws_closed(event.code)
            await ws.close(sendable_close_code(event.code), sendable_close_reason(event.reason))
            return


async def _relay_rejection(stream: AgentStream, cap: ExchangeCapture, exc: InvalidStatus) -> None:
    """The local service answered the upgrade with a normal HTTP response: pass it on."""
    response = exc.response
    fields = tuple(
        (n.encode("latin-1"), v.encode("latin-1"))
        for n, v in response.headers.raw_items()
        if n.lower() not in ("connection", "transfer-encoding")
    )
    body = bytes(response.body or b"")
    reason = response.reason_phrase.encode("latin-1", "replace")
    cap.response_head(response.status_code, reason, fields)
    cap.response_body(body)
    stream.send_response(response.status_code, reason, fields, end_stream=not body)
    if body:
        await stream.send_data(body, end_stream=True)
