"""The relay's agent endpoint: where a relay accepts agents, and the URL an agent dials for a relay a user names.

The relay and the agent both read ``CONNECT_PATH`` from here; ``relay_connect_url`` turns
``wss://relay.example``, ``https://...`` or ``host:port`` into the WebSocket URL of that endpoint
(config checks a relay URL with it too, so a bad one is refused where it is written).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from devtunnel.errors import ConfigError
from devtunnel.values.terminal import quoted

__all__ = ["CONNECT_PATH", "quoted_url", "relay_connect_url", "same_relay", "without_user_info"]

CONNECT_PATH = "/_devtunnel/connect"
"""Where a relay accepts agent WebSockets."""


def relay_connect_url(relay: str) -> str:
    """The WebSocket URL of a relay's agent endpoint.

    ``http(s)://`` becomes ``ws(s)://``; a URL without a path gets ``/_devtunnel/connect``.

    Raises:
        ConfigError: the text is not a relay URL.
    """
    text = relay.strip()
    if "://" not in text:
        text = "ws://" + text
    shown = without_user_info(relay)
    if shown != relay:
        # The URL would go into every message and log line that names the relay, and the
        # agent API's tunnel errors, password and all: the token is how an agent signs in.
        raise ConfigError(f"invalid relay URL {quoted(shown)}: a relay URL takes no user name or password"
                          " (NAME:PASSWORD@): give the relay's token with --token-file, DEVTUNNEL_TOKEN"
                          " or devtunnel config add-token -")
    query = re.search(r"[?#]", relay)
    if query is not None:
        # The same: "?token=..." would be in every message naming the relay. The relay reads
        # nothing from a query, so nothing is lost by refusing it.
        raise ConfigError(f"invalid relay URL {quoted(relay[:query.start()] + '…')}: a relay URL takes no query or"
                          " fragment (?... or #...): give the relay's token with --token-file, DEVTUNNEL_TOKEN"
                          " or devtunnel config add-token -")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"invalid relay URL {quoted(relay)}: {exc}") from exc
    scheme = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}.get(parts.scheme.lower())
    if scheme is None:
        raise ConfigError(f"invalid relay URL {quoted(relay)}: use ws://, wss://, http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"invalid relay URL {quoted(relay)}: the host is missing")
    if not _is_host(parts.hostname):
        # "ws://a b" was saved by config set, passed config check and was dialled for ever.
        raise ConfigError(f"invalid relay URL {quoted(relay)}: {quoted(parts.hostname)} is not a host name or address")
    path = parts.path if parts.path not in ("", "/") else CONNECT_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


_NOT_IN_HOST = re.compile(r"[\s\x00-\x1f\x7f<>\"{}|\\^`%/?#@]")


def _is_host(host: str) -> bool:
    """Whether ``host`` (``urlsplit``'s ``hostname``) can be a host name or an IP address: no space,
    control character or URL delimiter, and a name that is not ASCII has an IDNA form."""
    if _NOT_IN_HOST.search(host) or host.startswith(".") or ".." in host:
        return False
    try:
        host.encode("idna")
    except UnicodeError:
        return ":" in host  # an IPv6 address (bracketed in the URL)
    return True


_USER_INFO = re.compile(r"^(\s*(?:[A-Za-z][A-Za-z0-9+.-]*://)?)[^/?#]*@")


def without_user_info(relay: str) -> str:
    """``relay`` with any ``NAME:PASSWORD@`` before its host written ``…@``: how a relay URL (or a
    tunnel's target, ``values.target``) that carries one is named in a message (the password
    must not be)."""
    return _USER_INFO.sub(r"\1…@", relay, count=1)


def quoted_url(text: str) -> str:
    """A URL (or a target, a health path) as a message names it: ``quoted``, with any password in
    it written ``…@`` (``without_user_info``)."""
    return quoted(without_user_info(text))


def same_relay(one: str, other: str) -> bool:
    """Whether two relay URLs reach the same agent endpoint (``http://h:1`` and ``ws://h:1/``
    do), so a token given for one belongs to the other.

    Raises:
        ConfigError: either is not a relay URL.
    """
    return relay_connect_url(one) == relay_connect_url(other)
