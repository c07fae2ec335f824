"""Parse the TARGET of ``devtunnel http``: ``8080``, ``host:port`` or ``http(s)://host:port[/base]``."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from devtunnel.errors import ConfigError
from devtunnel.values.terminal import quoted
from devtunnel.values.numbers import is_decimal
from devtunnel.values.relay_url import quoted_url, without_user_info

__all__ = ["Target", "parse_target"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# A DNS name: dot-separated labels of letters, digits, hyphens and underscores.
_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?$")
_EXAMPLES = "use a port (8080), HOST:PORT (127.0.0.1:8080) or a URL (http://localhost:8080)"


@dataclass(frozen=True, slots=True)
class Target:
    """Where the agent forwards a tunnel's traffic."""

    scheme: str
    """``http`` or ``https``."""
    host: str
    """Host name or IP address (IPv6 without brackets)."""
    port: int
    base_path: str = ""
    """A path prefix put before every request target (``""`` or ``/base`` without a trailing slash)."""

    @property
    def tls(self) -> bool:
        """True for an https target."""
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        """``host:port`` as used in a Host header (port left out when it is the scheme's default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == _DEFAULT_PORTS[self.scheme]:
            return host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The target as a URL, e.g. ``http://127.0.0.1:8080`` or ``https://10.0.0.2:8443/api``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base_path}"

    def request_target(self, target: bytes) -> bytes:
        """The request target to send to the local service for a public request ``target``."""
        if not self.base_path or not target.startswith(b"/"):
            return target
        return self.base_path.encode("utf-8") + target

    def __str__(self) -> str:
        return self.url


def _port(text: str, original: str) -> int:
    if not is_decimal(text):
        raise ConfigError(f"invalid target {quoted(original)}: port {quoted(text)} is not a number; {_EXAMPLES}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ConfigError(f"invalid target {quoted(original)}: port {port} is not between 1 and 65535")
    return port


def _check_host(host: str, original: str) -> str:
    if not host:
        raise ConfigError(f"invalid target {quoted(original)}: the host is missing; {_EXAMPLES}")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME.match(host):
        raise ConfigError(f"invalid target {quoted(original)}: {quoted_url(host)} is not a valid host name")
    return host


def parse_target(text: str) -> Target:
    """Parse a TARGET argument.

    A bare port means ``http://127.0.0.1:PORT``; ``HOST:PORT`` means ``http://HOST:PORT``; a URL
    may use ``http`` or ``https`` and carry a base path that is put before every request path.

    Raises:
        ConfigError: the text is none of these forms (the message says which forms are accepted).
    """
    original = without_user_info(text)  # what messages quote
    text = text.strip()
    if not text:
        raise ConfigError(f"the target is empty; {_EXAMPLES}")
    if is_decimal(text):
        return Target("http", "127.0.0.1", _port(text, original))
    if "://" not in text:
        if "@" in text:
            raise ConfigError(f"invalid target {quoted(original)}: credentials in the target are not supported")
        if "/" in text:
            raise ConfigError(f"invalid target {quoted(original)}: a path needs a URL with a scheme; {_EXAMPLES}")
        if text.startswith("["):
            host, sep, port_part = text[1:].partition("]:")
            if not sep:
                raise ConfigError(f"invalid target {quoted(original)}: the port is missing; {_EXAMPLES}")
        else:
            host, sep, port_part = text.rpartition(":")
            if not sep:
                raise ConfigError(f"invalid target {quoted(original)}: the port is missing; {_EXAMPLES}")
            if ":" in host:
                raise ConfigError(f"invalid target {quoted(original)}: write an IPv6 address as [ADDRESS]:PORT")
        return Target("http", _check_host(host, original), _port(port_part, original))

    try:
        parts = urlsplit(text)
        port_text = parts.netloc.rpartition(":")[2] if parts.port is not None else ""
    except ValueError as exc:
        raise ConfigError(f"invalid target {quoted(original)}: {exc}; {_EXAMPLES}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(f"invalid target {quoted(original)}: the scheme must be http or https, not {quoted(parts.scheme)}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"invalid target {quoted(original)}: credentials in the target URL are not supported")
    if parts.query or parts.fragment:
        raise ConfigError(f"invalid target {quoted(original)}: a target URL cannot have a query or a fragment")
    host = _check_host(parts.hostname or "", original)
    port = _port(port_text, original) if port_text else _DEFAULT_PORTS[scheme]
    base = parts.path.rstrip("/")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in base):
        raise ConfigError(f"invalid target {quoted(original)}: the base path contains spaces or control characters")
    return Target(scheme, host, port, base)
