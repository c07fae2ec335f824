"""Hosts and origins that name this machine: what a listener on loopback answers, and nothing else.

A server on 127.0.0.1 is still reachable from a web page in a local browser: through DNS
rebinding (a hostile name that resolves to 127.0.0.1, so the ``Host`` header is that name) or
through a plain cross-site request (with the page's ``Origin``). The agent API and the embedded
relay both refuse a ``Host`` that is not a loopback name, by the one rule here.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from devtunnel.values.numbers import is_decimal

__all__ = ["is_loopback_host", "is_loopback_origin"]


def _split_host(value: str) -> str | None:
    """The host part of a ``Host`` header value (``[::1]:4040`` -> ``::1``); None if malformed."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest and not (rest.startswith(":") and is_decimal(rest[1:])):
            return None
        return host
    host, sep, port = value.partition(":")
    if sep and not is_decimal(port):
        return None
    return host


def _loopback_name(host: str) -> bool:
    host = host.lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host) in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
    except ValueError:
        return False


def is_loopback_host(value: str) -> bool:
    """True for a Host header naming this machine: ``127.0.0.1``, ``localhost``, ``[::1]``, ``*.localhost``, any port.

    Any port: a page can choose the port its requests go to, never the name a browser puts in
    ``Host`` for it (``*.localhost`` a browser resolves to loopback itself)."""
    host = _split_host(value)
    if not host:
        return False
    if ":" in host and not value.strip().startswith("["):
        return False  # a bare IPv6 address must be bracketed in a Host header
    return _loopback_name(host)


def is_loopback_origin(value: str) -> bool:
    """True for an ``Origin`` of a page served from this machine (``http://localhost:3000``).

    An origin is a scheme, a host and a port, as a browser writes it (RFC 6454 6.2): a value with
    user info, a path, a query or a fragment is no origin, whatever host a URL parser finds in it
    (``http://evil.example\\@localhost``: Python reads ``localhost``, a browser ``evil.example``)."""
    try:
        parts = urlsplit(value.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    if "@" in parts.netloc or parts.path or parts.query or parts.fragment or "\\" in value:
        return False
    return parts.scheme in ("http", "https") and host is not None and _loopback_name(host)
