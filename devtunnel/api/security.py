"""Keep the agent API reachable from this machine's own tools only.

The API listens on 127.0.0.1, but a web page in a local browser can still reach it: through
DNS rebinding (a hostile name that resolves to 127.0.0.1, so the Host header is that name) or
through a plain cross-site request. :class:`LoopbackOnly` refuses both before any route runs:
the Host must be a loopback name, and a browser request must come from a loopback origin
(``values.loopback``, the rule the embedded relay's Hosts follow too). It
also refuses what a proxy forwarded (a tunnel to the API's own port), whatever its Host.
A target in absolute-form (``GET http://evil.example/api/tunnels``) names its host in place of
the Host field, as it does at the embedded relay (``values.absolute_target``, read by
:class:`ApiHttpProtocol`): a foreign one is refused like a foreign Host, a malformed one is a 400.
Every HTTP answer says ``X-Content-Type-Options: nosniff``: answers quote captured data
(``<script>`` in a path or body), which a browser must never read as anything but JSON.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from devtunnel.export.agent_json import error_json
from devtunnel.values.absolute_target import authority_as_host
from devtunnel.values.loopback import is_loopback_host, is_loopback_origin

__all__ = ["ApiHttpProtocol", "LoopbackOnly"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


_PROXIED = ("x-forwarded-for", "x-forwarded-host", "forwarded")
"""Headers proxies add, and this machine's tools never send: every relay adds X-Forwarded-For."""


_SINGLE = {"host": "Host", "origin": "Origin", "sec-fetch-site": "Sec-Fetch-Site"}
"""The headers a refusal reads, which a request may carry once (by their spelling in messages)."""


def _refusal(scope: Scope) -> str | None:
    """Why this request must be refused, or None when it may proceed."""
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        # First value wins; a duplicated header that decides is itself suspicious, so refuse it
        # (a loopback Origin ahead of the page's own one let a cross-origin request through).
        key = name.decode("latin-1").lower()
        if key in _SINGLE and key in headers:
            return f"more than one {_SINGLE[key]} header"
        headers.setdefault(key, value.decode("latin-1"))
    host = headers.get("host")
    if host is None or not is_loopback_host(host):
        return "the agent API answers only to a loopback Host (127.0.0.1, localhost, [::1], *.localhost)"
    if any(name in headers for name in _PROXIED):
        # A tunnel to the API's own port (devtunnel http 4040, or 4041 where a second agent's
        # API went) would put it on the internet: with --host-header rewrite every request
        # arrives with Host 127.0.0.1:4040, and on the embedded relay with NAME.localhost.
        return "the agent API does not answer requests forwarded by a proxy or a tunnel (X-Forwarded-For, Forwarded)"
    origin = headers.get("origin")
    if origin is not None and not is_loopback_origin(origin):
        return "cross-origin requests to the agent API are refused"
    if headers.get("sec-fetch-site", "").lower() == "cross-site":
        return "cross-site requests to the agent API are refused"
    return None


_NOSNIFF = (b"x-content-type-options", b"nosniff")


def _no_sniffing(send: Send) -> Send:
    """``send`` with ``X-Content-Type-Options: nosniff`` added to the answer's head."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), _NOSNIFF]}
        await send(message)

    return sending


class LoopbackOnly:
    """ASGI middleware: 403 (JSON, ngrok's error shape) for a non-loopback Host or a cross-site
    caller; ``nosniff`` on every HTTP answer.

    WebSocket handshakes are refused by closing before accepting, which the server turns into
    an HTTP 403.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        reason = _refusal(scope)
        if reason is None:
            await self.app(scope, receive, _no_sniffing(send) if scope["type"] == "http" else send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
        else:
            body = json.dumps(error_json(403, reason)).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                _NOSNIFF],
                }
            )
            await send({"type": "http.response.body", "body": body})


class ApiHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol (httptools) reading a target in absolute-form as a server must
    (RFC 9112 3.2.2) and as the embedded relay does (``values.absolute_target``): its authority
    becomes the Host that :class:`LoopbackOnly` judges, its path the route.

    uvicorn alone takes the path of ``GET http://evil.example/api/tunnels`` and keeps the Host
    field the client added (``localhost``): a request that names another host was served. A target
    in absolute-form that cannot be read (user info, no host) gets uvicorn's 400 for a malformed
    request (an exception raised in a parser callback is a parser error to httptools). A WebSocket
    handshake is read the same way: uvicorn hands it on as the head rewritten here.
    """

    def on_headers_complete(self) -> None:
        if not self.url.startswith(b"/"):  # (origin-form, nearly every request, pays nothing)
            read = authority_as_host(self.url, self.parser.get_method(), lowered=self.headers)
            if isinstance(read, str):
                raise ValueError(read)
            if read is not None:
                self.url = read
        super().on_headers_complete()
