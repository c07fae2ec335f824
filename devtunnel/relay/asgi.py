"""The ASGI pieces the relay's forwarders and its own pages share: the callable types, short
text/plain answers (to a request or a WebSocket handshake), what a request's scope says (client
address, target, whether its head may be forwarded) and the connection behind a ``receive``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from devtunnel.values.request_head import head_problem

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def send_plain(send: Send, status: int, text: str, *, close: bool = False) -> None:
    """Answer with a short text/plain response."""
    for message in plain(status, text, close=close):
        await send(message)


PLAIN_TYPE = [(b"content-type", b"text/plain; charset=utf-8"), (b"x-content-type-options", b"nosniff")]
"""The type of the relay's own answers: text, never sniffed as HTML (they quote the path or Host
a public client sent)."""


def plain(
    status: int, text: str, *, close: bool = False, extra: list[tuple[bytes, bytes]] | None = None
) -> list[dict[str, Any]]:
    """The ASGI messages of a short text/plain response."""
    body = text.encode()
    headers = [*PLAIN_TYPE, (b"content-length", str(len(body)).encode())]
    if extra:
        headers += extra
    if close:
        headers.append((b"connection", b"close"))
    return [{"type": "http.response.start", "status": status, "headers": headers}, {"type": "http.response.body", "body": body}]


async def deny_websocket(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Refuse a WebSocket handshake with a short text/plain response."""
    body = text.encode()
    headers = [*PLAIN_TYPE, (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "websocket.http.response.body", "body": body})


def protocol_of(receive: Receive) -> Any:
    """The protocol object of the connection behind an ASGI ``receive`` (uvicorn passes a bound
    method of it; for the relay's WebSockets a ``GuardedWebSocketProtocol``), or None."""
    return getattr(receive, "__self__", None)


def client_ip(scope: Scope) -> str:
    """The client's address as the socket saw it ("" when unknown)."""
    return address(scope.get("client"))


def address(client: tuple[str, int] | None) -> str:
    """The address of a scope's ``client`` (the socket's peer: host and port), "" when unknown."""
    return str(client[0]) if client else ""


#: Key of the ASGI scope extension with the request target as the client sent it, up to any
#: ``#`` (the relay's HTTP protocol sets it): ``raw_path`` and ``query_string`` cannot tell
#: ``/a?`` from ``/a``, which differ to a service that signs or routes on its URL.
TARGET_EXTENSION = "devtunnel.target"


def target(scope: Scope) -> bytes:
    """The request target as it arrived: raw path, then ``?`` and the query if there was one
    (an empty one too), without a fragment (no part of a request target, RFC 9112 3.2)."""
    sent: bytes | None = scope.get("extensions", {}).get(TARGET_EXTENSION)
    if sent is not None:
        return sent
    return target_of(scope["raw_path"], scope.get("query_string"))


def target_of(raw_path: bytes, query: bytes | None) -> bytes:
    """``target`` from a scope's ``raw_path`` and ``query_string``."""
    return raw_path + b"?" + query if query else raw_path


def request_problem(scope: Scope) -> str | None:
    """Why this request must not be forwarded, or None (the HTTP protocol checked it already;
    this keeps the rule when the application is served some other way)."""
    method = scope.get("method", "GET").encode("latin-1")
    return head_problem(method, target(scope), scope["headers"])
