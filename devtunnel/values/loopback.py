"""Hosts and origins that name this machine: what a listener on loopback answers, and nothing else.

A server on 127.0.0.1 is still reachable from a web page in a local browser: through DNS
rebinding (a hostile name that resolves to 127.0.0.1, so the ``Host`` header is that name) or
through a plain cross-site request (with the page's ``Origin``). The agent API and the embedded
relay both refuse a ``Host`` that is not a loopback name, by the one rule here.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from devtunnel.values.numbers import is_decimal

__all__ = ["is_loopback_host", "is_loopback_origin"]


_NAME = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
"""A DNS name as a Host may write it: labels of letters, digits and hyphens, none empty."""
_PORT_DIGITS = 5


def _port_is_valid(port: str) -> bool:
    """Whether ``port`` is a port number, 1-65535, in ASCII digits."""
    return is_decimal(port) and len(port) <= _PORT_DIGITS and 0 < int(port) <= 65535


def _split_host(value: str) -> str | None:
    """The host of a ``Host`` header value (``[::1]:4040`` -> ``::1``), or None when the value is
    not a host and an optional port: a DNS name (``_NAME``), an IPv4 address, or an IPv6 address
    in brackets, then ``:`` and a port of 1-65535 at most.

    The syntax comes first, the name after: ``evil.com#.localhost``, ``evil.com\\.localhost`` and
    ``.localhost`` end in ``.localhost`` but are no host name (a browser or a proxy may read
    ``evil.com`` in them), and ``localhost:99999999`` names no port."""
    value = value.strip(" \t")  # (the spaces around a field value, RFC 9110 5.5: no other)
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest and not (rest.startswith(":") and _port_is_valid(rest[1:])):
            return None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        return host
    host, sep, port = value.partition(":")
    if sep and not _port_is_valid(port):
        return None
    if not _NAME.fullmatch(host):
        return None  # an IPv4 address passes too: digits and dots
    return host


def _loopback_name(host: str) -> bool:
    """Whether ``host`` (no port, no brackets) is a loopback name or address."""
    host = host.lower()
    if host == "localhost" or (host.endswith(".localhost") and _NAME.fullmatch(host)):
        return True
    try:
        return ipaddress.ip_address(host) in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
    except ValueError:
        return False


def is_loopback_host(value: str) -> bool:
    """True for a Host header naming this machine: ``127.0.0.1``, ``localhost``, ``[::1]``, ``*.localhost``,
    with a port of 1-65535 or none.

    Any port: a page can choose the port its requests go to, never the name a browser puts in
    ``Host`` for it (``*.localhost`` a browser resolves to loopback itself). The value must be a
    host and a port by their syntax (``_split_host``) before its name is looked at."""
    host = _split_host(value)
    return host is not None and _loopback_name(host)


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
