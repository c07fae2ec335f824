"""One exception tree for devtunnel.

Foreign errors (OSError, sqlite3.Error, httpx.HTTPError, websockets errors ...) are translated
at the boundary where they happen (``raise StoreError(...) from exc``), so the command line can
print one clear line and never a stray traceback::

    DevtunnelError                 base: ``str(err)`` is a sentence a user understands
    ├── ConfigError                bad flag value, unreadable or invalid devtunnel.toml
    ├── ProtocolError              the tunnel byte stream broke the protocol (protocol/)
    │   ├── FlowControlError       a peer sent more than its window allowed
    │   └── StreamClosedError      a frame for a stream that is closed or reset
    ├── TunnelError                the tunnel could not be set up
    │   ├── AuthError              the relay refused the token (not retried)
    │   ├── NameTakenError         the tunnel name belongs to another token
    │   │   └── NameInUseError     another live agent with the same token holds the name
    │   └── RelayUnreachableError  the relay could not be reached (retried)
    ├── StoreError                 the capture database is corrupt, locked or read-only
    ├── NotFoundError              no exchange (or tunnel) with that id
    ├── FilterSyntaxError          a filter expression does not parse (has ``position``)
    ├── FilterTimeoutError         a filter's regex took too long (``capture.filters.base.regexp``)
    ├── ExportError                an exchange cannot be exported in that format
    └── ReplayError                a replay could not be sent
        └── EditError              the edit does not fit the request (a --set path into a string,
                                   a body that is not JSON): bad usage, nothing was sent
"""

from __future__ import annotations


class DevtunnelError(Exception):
    """Base of every error devtunnel raises on purpose."""


class ConfigError(DevtunnelError):
    """A flag, environment variable or config file value is invalid."""


class ProtocolError(DevtunnelError):
    """The peer broke the tunnel protocol; the connection must be closed."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class FlowControlError(ProtocolError):
    """More data was sent on a stream than its flow-control window allowed."""


class StreamClosedError(ProtocolError):
    """A frame was sent or received for a stream that is already closed."""


class TunnelError(DevtunnelError):
    """The tunnel could not be established."""


class AuthError(TunnelError):
    """The relay refused the agent's token. Retrying will not help."""


class NameTakenError(TunnelError):
    """The requested tunnel name is held by a connection with another token."""


class NameInUseError(NameTakenError):
    """Another agent that is online with the same token holds the requested tunnel name."""


class RelayUnreachableError(TunnelError):
    """The relay could not be reached; the agent retries with backoff."""


class StoreError(DevtunnelError):
    """The capture database cannot be used (corrupt, locked, read-only, missing)."""


class NotFoundError(DevtunnelError):
    """No exchange or tunnel has the given id or name."""


class FilterSyntaxError(DevtunnelError):
    """A filter expression does not parse.

    Attributes:
        position: 0-based offset in the expression where the problem is.
        message: the explanation without the position.
    """

    def __init__(self, message: str, position: int, expression: str = "") -> None:
        self.message = message
        self.position = position
        self.expression = expression
        super().__init__(f"{message}, at column {position + 1}")


class FilterTimeoutError(DevtunnelError):
    """A regular expression of a filter took longer than its time bound; the search was stopped.

    Attributes:
        pattern: the regex as the filter ran it (with its inline flags).
    """

    def __init__(self, message: str, pattern: str = "") -> None:
        self.pattern = pattern
        super().__init__(message)


class ExportError(DevtunnelError):
    """An exchange cannot be exported in the requested format."""


class ReplayError(DevtunnelError):
    """A replay could not be sent to its target."""


class EditError(ReplayError):
    """The edit asked for does not fit the request it is applied to: what the user typed cannot be
    applied (the command line exits 2, the agent API answers 400), and nothing was sent."""
