"""Header rewriting at the relay: hop-by-hop headers out, X-Forwarded-*, Forwarded and
X-Real-IP in, cookies kept to the tunnel that set them.

Request headers reach the agent as the client wrote them (the relay's HTTP protocol keeps the
raw names uvicorn would lowercase); values, order and repeats are kept byte for byte. Response
header names are written lowercased by uvicorn.
"""

from __future__ import annotations

from operator import itemgetter

from devtunnel.protocol.events import Fields
from devtunnel.protocol.notice import RULE_HEADER
from devtunnel.values.http1 import (
    HOP_BY_HOP, LENGTH_DIGITS, RELAY_SET, connection_tokens, content_length_digits,
)

Header = tuple[bytes, bytes]

# What a request loop must look at: hop-by-hop headers, headers the relay sets, and the ones
# that belong to the public WebSocket handshake (already settled between client and relay).
_REQUEST_SPECIAL = HOP_BY_HOP | RELAY_SET | {
    b"x-forwarded-for",
    b"sec-websocket-extensions",
    RULE_HEADER,
}
_WEBSOCKET_KEEP = frozenset({b"connection", b"upgrade"})
# Response headers the relay writes itself when accepting a public WebSocket.
_WEBSOCKET_ACCEPT_DROP = HOP_BY_HOP | {
    b"sec-websocket-accept",
    b"sec-websocket-protocol",
    b"sec-websocket-extensions",
    b"content-length",
}


_name = itemgetter(0)


def hostname_of(host: bytes) -> bytes:
    """A Host header's host, lowercased, without its port or a fully qualified name's final dot
    (IPv6 literals keep their brackets)."""
    host = host.lower()
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    colon = host.rfind(b":")
    return (host[:colon] if colon >= 0 else host).rstrip(b".")


def scope_cookies(headers: list[Header], host: bytes) -> list[Header]:
    """``headers`` with every ``Set-Cookie`` kept to the host that answered (``host``: the
    request's Host header).

    A ``Domain`` attribute naming anything but that host or a name under it is removed, so the
    cookie is the host's own: ``Domain=`` the relay's domain would make a browser send it to
    every tunnel on the relay (each another developer's), and one tunnel could set cookies for
    another's users (the relay's domain is not on the Public Suffix List, which keeps ngrok's
    tunnels apart). The rest of the cookie is kept as the service wrote it.
    """
    if not any(name.lower() == b"set-cookie" for name, _ in headers):
        return headers
    own = hostname_of(host)
    out: list[Header] = []
    for name, value in headers:
        if name.lower() == b"set-cookie" and b"=" in value.partition(b";")[2]:
            first, *attributes = value.split(b";")
            kept = [a for a in attributes if not _foreign_domain(a, own)]
            if len(kept) != len(attributes):
                value = b";".join([first, *kept])
        out.append((name, value))
    return out


def _foreign_domain(attribute: bytes, own: bytes) -> bool:
    """Whether a cookie ``attribute`` is a ``Domain`` reaching beyond the host ``own``."""
    key, _, domain = attribute.partition(b"=")
    if key.strip().lower() != b"domain":
        return False
    domain = domain.strip().lstrip(b".").rstrip(b".").lower()  # RFC 6265 5.2.3 ignores a leading dot
    return not own or (domain != own and not domain.endswith(b"." + own))


def request_host(headers: list[Header]) -> bytes:
    """The Host header's value (``headers`` with lowercase names, as in an ASGI scope); b"" without one."""
    for name, value in headers:
        if name == b"host":
            return value
    return b""


def forward_request_headers(
    headers: list[Header],
    host: bytes,
    client_ip: bytes,
    proto: bytes,
    *,
    websocket: bool = False,
    lowered: list[Header] | None = None,
) -> Fields:
    """The headers to send to the agent for a public request.

    Removes hop-by-hop headers (and every header ``Connection`` names), except ``Connection``
    and ``Upgrade`` on a WebSocket handshake, and a ``devtunnel-rule`` header (``RULE_HEADER``,
    the relay's own); appends the client address to ``X-Forwarded-For``
    (or adds one); removes whatever the client sent of ``RELAY_SET`` and sets the relay's own
    ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` (``relay_fields``). Host is kept, and so are the
    names, values and order of everything else.

    Args:
        headers: the request headers in order, names in any case.
        host: the Host header value.
        client_ip: the address of the socket's peer, appended to X-Forwarded-For.
        proto: ``b"http"`` or ``b"https"``, as the public client sees the relay.
        websocket: whether this is a WebSocket handshake.
        lowered: ``headers`` with their names lowercased, in the same order (uvicorn's
            ``scope["headers"]``), when at hand: a request without any header this rule
            looks at is then copied as it is, without a loop over its headers.
    """
    own = relay_fields(host, proto)
    if lowered is not None and not websocket and _REQUEST_SPECIAL.isdisjoint(map(_name, lowered)):
        return (*headers, (b"X-Forwarded-For", client_ip), *own)
    out: list[Header] = []
    xff_index = -1
    listed: list[bytes] = []
    for name, value in headers:
        lower = name.lower()
        if lower in _REQUEST_SPECIAL:
            if lower == b"x-forwarded-for":
                xff_index = len(out)
            elif lower == b"connection":
                listed += connection_tokens(value)
                if not websocket:
                    continue
            elif websocket and lower in _WEBSOCKET_KEEP:
                pass
            else:
                continue
        out.append((name, value))
    if listed:
        drop = set(listed) - _WEBSOCKET_KEEP if websocket else set(listed)
        drop -= {b"host", b"x-forwarded-for"}
        if drop:
            out = [(n, v) for n, v in out if n.lower() not in drop]
            xff_index = next((i for i, (n, _) in enumerate(out) if n.lower() == b"x-forwarded-for"), -1)
    if xff_index >= 0:
        name, value = out[xff_index]
        out[xff_index] = (name, value + b", " + client_ip)
    else:
        out.append((b"X-Forwarded-For", client_ip))
    out += own
    return tuple(out)


def relay_fields(host: bytes, proto: bytes) -> tuple[Header, ...]:
    """The headers the relay adds to a request to ``host`` (its Host value, b"" without one) over
    ``proto``: ``X-Forwarded-Proto``, and ``X-Forwarded-Host`` with a Host. The rest of
    ``RELAY_SET`` a client sent (``Forwarded``, ``X-Real-IP``, ``X-Forwarded-Port``) is removed and
    not set again: what a client writes there an app would take for the relay's word (Rack and
    Spring read ``Forwarded`` first), and the relay's ``X-Forwarded-*`` say it all. Setting all
    three as well cost the relay 13 % more instructions a request (``bench/relay_callgrind.py``)."""
    if host:
        return ((b"X-Forwarded-Proto", proto), (b"X-Forwarded-Host", host))
    return ((b"X-Forwarded-Proto", proto),)


def forward_response_headers(headers: Fields, *, length_allowed: bool, host: bytes) -> list[Header] | None:
    """The agent's response headers as the public client should get them, for a request to
    ``host``; None when its ``Content-Length`` fields cannot be written as they are
    (``length_problem`` says why).

    Hop-by-hop headers go (uvicorn frames the body itself). Without ``length_allowed`` (a 204,
    which never carries one: RFC 9110 8.6) Content-Length goes too. A 304's stays as the service
    sent it: it is the length the 200 would have had, and no body follows (``http.not_modified``). Each
    Set-Cookie is kept to ``host`` (``scope_cookies``). One walk over the fields does it all:
    it runs for every response.
    """
    out: list[Header] = []
    listed: set[bytes] = set()
    length: bytes | None = None
    cookies = False
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"connection":
                listed.update(connection_tokens(value))
            continue
        if lower == b"content-length":
            digits = content_length_digits(value)
            if digits is None or len(digits) > LENGTH_DIGITS:
                return None
            digits = digits.lstrip(b"0")
            if length is not None and digits != length:
                return None
            length = digits
            if not length_allowed:
                continue
        elif lower == b"set-cookie":
            cookies = True
        out.append((name, value))
    if listed:
        out = [(n, v) for n, v in out if n.lower() not in listed]
    return scope_cookies(out, host) if cookies else out


def length_problem(headers: Fields) -> str | None:
    """Why a response's ``Content-Length`` fields cannot be written as they are, or None.

    Each must be digits alone, and several must agree: uvicorn frames the body by the first
    and writes them all, so ``2`` and ``5``, or ``+5`` (a number to Python, not to HTTP),
    would tell the client, or a proxy in front of the relay, another length than the body's:
    the next response on its connection would be read from the wrong byte (RFC 9110 8.6).
    Nor may one be longer than ``LENGTH_DIGITS``: no body is that long.
    """
    length: bytes | None = None
    for name, value in headers:
        if name.lower() == b"content-length":
            digits = content_length_digits(value)
            if digits is None:
                return "an invalid Content-Length"
            if len(digits) > LENGTH_DIGITS:
                return f"a Content-Length of more than {LENGTH_DIGITS} digits"
            digits = digits.lstrip(b"0")
            if length is not None and digits != length:
                return "two different Content-Length values"
            length = digits
    return None


def websocket_accept_headers(headers: Fields) -> tuple[bytes | None, list[Header]]:
    """Split a 101 answer into the chosen subprotocol and the headers to add to the accept."""
    subprotocol: bytes | None = None
    extra: list[Header] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"sec-websocket-protocol":
            subprotocol = value.strip()
        elif lower not in _WEBSOCKET_ACCEPT_DROP:
            extra.append((lower, value))
    return subprotocol, extra
