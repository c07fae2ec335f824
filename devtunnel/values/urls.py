"""A URL given on the command line or in a settings file, split without a stray ``ValueError``.

``urllib.parse.urlsplit`` raises ``ValueError`` for an unclosed IPv6 bracket (``http://[bad``)
and ``SplitResult.port`` for a port that is not a number of 0-65535; a flag's value reaching
either ended ``devtunnel relay --public-url``, ``send --to`` and ``logs --api`` in a traceback.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from devtunnel.errors import ConfigError
from devtunnel.values.relay_url import quoted_url

__all__ = ["is_localhost_name", "origin", "split_url"]


def split_url(text: str, what: str) -> SplitResult:
    """``text`` split by ``urlsplit``, its port checked.

    Args:
        text: the URL as given.
        what: where it was given (``--public-url``), to start the message with.

    Raises:
        ConfigError: ``urlsplit`` cannot split it, or its port is not a number of 0-65535.
    """
    shown = quoted_url(text)
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise ConfigError(f"{what} {shown}: not a valid URL ({exc})") from None
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number of 0-65535
    except ValueError:
        raise ConfigError(f"{what} {shown}: the port is not a number of 0-65535") from None
    return parts


def is_localhost_name(hostname: str) -> bool:
    """Whether ``hostname`` is ``localhost`` or a name under it (``payments.localhost``).

    Such names are loopback (RFC 6761), and the embedded relay's public URLs use them, but not
    every system resolver knows ``*.localhost`` ("Name or service not known"): what devtunnel
    sends there, or writes for a tool to send there, connects to 127.0.0.1 and keeps the name in
    ``Host``, which the relay routes by. (curl knows these names itself.)
    """
    name = hostname.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def origin(url: str) -> tuple[str, str, int] | None:
    """``url``'s scheme, host (lower case) and port (the scheme's default when it names none);
    None when it is no URL with a host, or no port is known for its scheme."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.scheme, parts.hostname, port

