"""Known dev servers refusing the public Host, and the one line that says what to do about it.

devtunnel sends the public client's Host to the local service (``--host-header preserve``, as
ngrok does). Dev servers that guard against DNS rebinding answer a Host they do not know with a
page of their own, which a browser shows and the agent's log shows as a bare ``403``:

- Vite 5/6: 403 ``Blocked request. This host ("NAME") is not allowed.`` (``server.allowedHosts``);
  its HMR WebSocket works once the page does.
- webpack-dev-server (and the Angular CLI, Vue CLI, Create React App that run it): 403
  ``Invalid Host header``; its live-reload WebSocket checks the Origin as well, and answers a
  foreign one with the message ``Invalid Host/Origin header`` and closes: ``--host-header
  rewrite`` fixes the page but not that.
- Django's ``runserver`` with ``DEBUG``: 400 ``Invalid HTTP_HOST header: 'NAME'`` (``ALLOWED_HOSTS``),
  and a form posted from the public origin: 403 ``Origin checking failed - ORIGIN does not match
  any trusted origins`` (``CSRF_TRUSTED_ORIGINS``).
- Rails: 403 naming the line to add, ``config.hosts << "NAME"``.
- Next.js 16: its dev resources (``/_next/...``) asked for with a foreign Origin get 403
  ``Unauthorized``, and its HMR WebSocket gets ``Unauthorized`` written on the socket, no HTTP
  at all (``allowedDevOrigins``; the Host does not matter, so ``--host-header rewrite`` does not help).

``refusal_hint`` reads a finished exchange and returns the line for the agent's log (the service
says it once per tunnel and refusal), or None; it looks at no exchange whose status is not one of
``STATUSES``, so the cost per request is one comparison.

``target_hint`` does the same for the agent's own 502 when the target is one address away: a dev
server on ``[::1]`` only (Node 17+, Vite) or speaking HTTPS. The 502 names the target to use, but
a webhook's sender reads no 502: the log line is what the user sees.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import urlsplit

from devtunnel.capture.model import Exchange

__all__ = ["MAX_HINTS", "SCANNED", "STATUSES", "WS_SCANNED", "Hint", "refusal_hint", "target_hint"]

STATUSES = frozenset((400, 403))
"""The statuses a dev server refuses a Host or an Origin with (and a WebSocket handshake ends
101 before a server message can refuse it)."""

SCANNED = 16 * 1024
"""Bytes of a body looked at: each text below comes near the start of its page. A tunnel that
records nothing keeps these of a refusal's body all the same (``ExchangeCapture``)."""

MAX_HINTS = 16
"""Hints a tunnel gives at most (a Django CSRF hint names the Origin a client sent: clients
sending many cannot fill the log, the API's tunnel or the memory)."""

_WS_MESSAGES = 4
"""The first WebSocket messages looked at, and ``_WS_HEAD`` bytes of each."""
_WS_HEAD = 200
WS_SCANNED = 4096
"""Bytes of WebSocket payloads a tunnel that records nothing keeps for the hints (the first
messages' ``_WS_HEAD`` bytes, with room for a client message before the refusal)."""

_VITE = re.compile(rb'^Blocked request\. This host \(("(?:[^"\\]|\\.)*")\) is not allowed\.'
                   rb'(?:.*?`(\w+\.allowedHosts)`)?', re.S)
_DJANGO_HOST = re.compile(rb"Invalid HTTP_HOST header: (?:&#x27;|')([^&'<\s]{1,255})(?:&#x27;|')")
_DJANGO_ORIGIN = re.compile(rb"Origin checking failed - (\S{1,300}) does not match any trusted origins")
_RAILS = re.compile(rb'config\.hosts &lt;&lt; (?:&quot;|")([^&"<\s]{1,255})(?:&quot;|")|config\.hosts << "([^"<\s]{1,255})"')
_WEBPACK_WS = b'"Invalid Host/Origin header"'
_USE = "start devtunnel http "
"""What a line of the agent's 502 says when it names the target to use instead (``forward.py``'s
``ipv6_loopback_hint`` and ``https_hint``)."""


class Hint(NamedTuple):
    """What a dev server refused (its ``key``, said once per tunnel) and the line that says what to do."""

    key: str
    line: str


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def refusal_hint(exchange: Exchange, rewrite: bool) -> Hint | None:
    """The hint for an exchange a known dev server refused for its Host or Origin, else None.

    Args:
        exchange: a finished exchange.
        rewrite: the tunnel sends the target's Host (``--host-header rewrite``), not the public one.
    """
    if exchange.websocket:
        return _next_socket(exchange) or _webpack_socket(exchange)
    response = exchange.response
    if response is None or response.status not in STATUSES:
        return None
    body = response.body[:SCANNED]
    public = exchange.request.host
    fix = "" if rewrite else ", or start devtunnel with --host-header rewrite (the local Host)"
    if response.status == 403:
        vite = _VITE.match(body)
        if vite is not None:
            host = _text(vite.group(1))
            option = _text(vite.group(2) or b"server.allowedHosts")
            return Hint(f"vite {host}", f"Vite refused the Host {host}: add {host} to {option} in vite.config.js{fix}")
        if body.rstrip() == b"Invalid Host header":
            return Hint("webpack", "webpack-dev-server refused the Host"
                        + ("" if rewrite else f" {public}")
                        + ": set devServer.allowedHosts to 'all' (or add the host) in webpack.config.js;"
                        " --host-header rewrite serves the page, but its live-reload WebSocket checks the Origin too")
        origin = _DJANGO_ORIGIN.search(body)
        if origin is not None:
            trusted = _text(origin.group(1))
            return Hint(f"django-origin {trusted}", f"Django refused a form posted from {trusted} (CSRF):"
                        f" add CSRF_TRUSTED_ORIGINS = ['{trusted}'] to settings.py")
        if body == b"Unauthorized" and exchange.request.path.startswith("/_next/"):
            return _next(exchange)
        rails = _RAILS.search(body)
        if rails is not None:
            host = _text(rails.group(1) or rails.group(2))
            return Hint(f"rails {host}", f'Rails refused the Host {host}: add config.hosts << "{host}"'
                        f" to config/environments/development.rb{fix}")
        return None
    django = _DJANGO_HOST.search(body)
    if django is not None:
        host = _text(django.group(1))
        return Hint(f"django {host}", f"Django refused the Host {host}: add '{host}' to ALLOWED_HOSTS in settings.py{fix}")
    return None


def _next(exchange: Exchange) -> Hint:
    origin = exchange.request.headers.get("origin") or exchange.request.host
    host = urlsplit(origin if "://" in origin else f"//{origin}").hostname or origin
    return Hint(f"next {host}", f"Next.js refused its dev resources to the Origin {origin}: add"
                f" allowedDevOrigins: ['{host}'] to next.config.js and restart it")


def _next_socket(exchange: Exchange) -> Hint | None:
    """Next.js 16 answers an HMR handshake from a foreign Origin with ``Unauthorized`` and no HTTP:
    the agent's 502 says what it sent (``local_ws``)."""
    if (exchange.error == "local_error" and exchange.error_message.endswith("(it sent Unauthorized)")
            and exchange.request.path.startswith("/_next/")):
        return _next(exchange)
    return None


def _webpack_socket(exchange: Exchange) -> Hint | None:
    """webpack-dev-server accepts a live-reload WebSocket, then refuses a foreign Host or Origin in its first message."""
    for message in exchange.ws_messages[:_WS_MESSAGES]:
        if message.sender == "server" and _WEBPACK_WS in message.payload[:_WS_HEAD]:
            origin = exchange.request.headers.get("origin") or exchange.request.host
            return Hint("webpack-ws", f"webpack-dev-server refused the live-reload WebSocket from {origin}"
                        " (its Host or Origin is not allowed): set devServer.allowedHosts to 'all'"
                        " (or add the host) in webpack.config.js")
    return None


def target_hint(exchange: Exchange) -> Hint | None:
    """The line of the agent's own 502 (the target refused or broke the connection) that names
    the target to use instead, else None."""
    if exchange.error not in ("local_refused", "local_error"):
        return None
    for line in exchange.error_message.splitlines():
        if _USE in line:
            return Hint(line, line)
    return None
