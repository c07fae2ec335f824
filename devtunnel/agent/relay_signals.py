"""What the relay decided, read by the agent: the name and URL it gave a tunnel, the rule that
decided a request, and the GOAWAY that ended a connection.

``check_welcome`` takes a WELCOME only for the tunnel that asked: the name it asked for (so no
tunnel of the agent can take another's name, which keys it in the service and the API) and a
plain ``http(s)://NAME.…`` URL (so what the API, the log and the terminal show is a URL of it).

A request a rule at the relay answered (or routed) arrives with the relay's ``devtunnel-rule``
header naming the rule (``protocol.notice`` writes and reads it; ``docs/protocol.md``, "Rules");
``rule_of`` takes it off the head; ``older_path_reading`` says when the relay reads a request's
path for rules as relays before ``RULE_PATHS`` did. ``goaway_error`` turns a GOAWAY into the
error the tunnel reports, and ``FINAL_GOAWAYS`` are those after which reconnecting cannot help.

Text the relay chose (a GOAWAY's reason, a name or URL it answered with, what it said when it
broke the protocol) goes into a message through ``relay_text`` alone, which keeps at most
``MAX_RELAY_TEXT`` characters of it: a relay can send a reason of a megabyte. The message keeps
it as sent, and each output escapes the message once (``values.terminal.escape``): the log's
formatter, the CLI's error line, the API (a tunnel's ``error`` and a tunnel error's ``msg``),
and the inspector, which shows what the API escaped without doubling its backslashes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from devtunnel.capture.model import RuleMark
from devtunnel.errors import AuthError, NameInUseError, NameTakenError, RelayUnreachableError, TunnelError
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import GoAway, RequestReceived, Welcome
from devtunnel.protocol.handshake import RULE_PATHS
from devtunnel.protocol.notice import RULE_HEADER, read_notice
from devtunnel.rules import PATH_READING, Rule, judges_path
from devtunnel.values.terminal import clipped
from devtunnel.values.numbers import is_decimal

__all__ = [
    "check_welcome", "older_path_reading", "rule_of", "goaway_error", "goaway_reason", "relay_text", "FINAL_GOAWAYS",
    "MAX_PUBLIC_URL", "MAX_RELAY_TEXT",
]

_MAX_SIZE_DIGITS = 18  # a body size the header names: always an int, never a 4,300-digit parse

MAX_PUBLIC_URL = 2048
"""The longest public URL the agent takes from a relay (a devtunnel relay's are under 100)."""
_URL_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space: a URL as written on the wire


MAX_RELAY_TEXT = 200
"""Characters of a text from the relay a message keeps (``relay_text``)."""


def relay_text(text: str) -> str:
    """``text`` from the relay as a message keeps and shows it: its first ``MAX_RELAY_TEXT``
    characters, then ``… (N more characters)`` if it was longer. Not escaped: the outputs do it."""
    return clipped(text, MAX_RELAY_TEXT)


def _shown(text: str) -> str:
    """A relay's value quoted for a message (``relay_text``)."""
    return f"'{relay_text(text)}'"


def check_welcome(asked: str, welcome: Welcome) -> None:
    """Take the relay's WELCOME for the tunnel that asked for name ``asked``, or say why not.

    The name must be the one asked for: the agent knows its tunnels by name, and a relay that
    renamed one could give it the name of another tunnel of the agent. The URL must be a plain
    ``http(s)://`` URL whose host starts with that name (a devtunnel relay's always is), so no
    tunnel shows another's URL and no control character or bidi override rides along.

    Raises:
        TunnelError: the relay answered for another name, or with something that is not a URL of it.
    """
    if welcome.name != asked:
        raise TunnelError(
            f"the relay answered this tunnel's request for the name '{asked}' with the name {_shown(welcome.name)};"
            " the agent keeps the name it asked for, so it refused the tunnel (is the relay a devtunnel relay?)"
        )
    url = welcome.url
    why = None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        why = "its port is not a port"
    else:
        if len(url) > MAX_PUBLIC_URL:
            why = f"it is {len(url)} characters long (at most {MAX_PUBLIC_URL})"
        elif not _URL_CHARS.fullmatch(url):
            why = "it holds spaces, control or non-ASCII characters"
        elif parts.scheme not in ("http", "https") or not parts.hostname:
            why = "it is not an http:// or https:// URL with a host"
        elif "@" in parts.netloc:
            why = "it carries a user name"
        elif parts.hostname.split(".", 1)[0] != asked:
            why = f"its host is not '{asked}.' followed by the relay's domain"
    if why is not None:
        raise TunnelError(
            f"the relay gave the tunnel '{asked}' the address {_shown(url)}, which is not a public URL of it: {why}"
        )


def rule_of(head: RequestReceived) -> tuple[RequestReceived, RuleMark | None, int, int, int | None]:
    """The head without the relay's ``devtunnel-rule`` header, the rule it names, the status
    the relay answered with (0: none, or the connection was dropped), the size of the body
    it answered with (0 from a relay that does not say), and, when the notice may carry only the
    first bytes of the request body (maybe none), that body's size as far as the relay knows it
    (None: it carries all of it; ``_request_cut``). The header's format: ``protocol.notice``."""
    value = None
    for name, v in head.headers:
        if name == RULE_HEADER:
            value = v
            break
    if value is None:
        return head, None, 0, 0, None
    head = dataclasses.replace(head, headers=tuple((n, v) for n, v in head.headers if n != RULE_HEADER))
    notice = read_notice(value)
    if notice is None:
        return head, None, 0, 0, None
    mark = RuleMark(notice.number, notice.action, notice.scope)
    return head, mark, notice.status, notice.size, _request_cut(notice.body, head)


def _request_cut(body: int | None, head: RequestReceived) -> int | None:
    """The request body's size when the notice may carry only part of it, else None. Its BODY
    field says so (``body``: None for ``all``, else the size). A relay that does not write it
    (``body`` -1) sends the body only when it came whole with the head, within its bound: then
    a body is cut when it falls short of the request's Content-Length (the size returned; the
    record compares, ``ExchangeCapture.request_body_cut``), or when a chunked request's notice
    carries none."""
    if body is None or body >= 0:
        return body
    declared = None
    chunked = False
    for name, value in head.headers:
        lowered = name.lower()
        if lowered == b"content-length":
            text = value.decode("latin-1").strip()
            declared = int(text) if is_decimal(text) and len(text) <= _MAX_SIZE_DIGITS else None
        elif lowered == b"transfer-encoding":
            chunked = True
    if declared is not None:
        return declared if declared > 0 else None
    return 0 if chunked and head.end_stream else None


def older_path_reading(welcome: Welcome, rules: Sequence[Rule]) -> str | None:
    """Why ``rules`` on a path can be passed at the relay that sent ``welcome``, or None: it
    enforces rules but reads paths as relays before ``PATH_READING`` (it does not say
    ``RULE_PATHS``), and one of them looks at the path."""
    reading = welcome.info.get(RULE_PATHS)
    if isinstance(reading, int) and not isinstance(reading, bool) and reading >= PATH_READING:
        return None
    rule = next((r for r in rules if judges_path(r)), None)
    if rule is None:
        return None
    relay = welcome.info.get("relay")
    name = relay_text(relay) if isinstance(relay, str) else "an older devtunnel"
    return (f"the relay ({name}) reads request paths as older relays do: /public/..;/admin, or one written"
            f" with backslashes, gets past a rule on the path there (rule {rule.index}); upgrade the relay")


# GOAWAY codes after which reconnecting cannot help. NO_ERROR on a live connection means a relay
# older than NAME_IN_USE handed the name to another agent with the same token: taking it back
# would only start a tug of war between the two. (Newer relays say NAME_IN_USE, and only to a
# connection that is stale: that one reconnects, and waits while a live agent holds the name.)
FINAL_GOAWAYS = frozenset(
    (
        ErrorCode.AUTH_FAILED, ErrorCode.NAME_TAKEN, ErrorCode.UNSUPPORTED_VERSION, ErrorCode.NO_ERROR,
        ErrorCode.RULES_REFUSED, ErrorCode.TOO_MANY_CONNECTIONS,
    )
)


def goaway_reason(event: GoAway) -> str:
    """The reason a GOAWAY gives, as a message shows it (``relay_text``)."""
    return relay_text(event.reason) if event.reason else "no reason given"


def goaway_error(event: GoAway) -> TunnelError:
    """The error a GOAWAY from the relay means for the tunnel."""
    reason = goaway_reason(event)
    if event.code == ErrorCode.AUTH_FAILED:  # a devtunnel relay's reason starts by saying so again
        return AuthError(f"the relay refused the token: {reason.removeprefix('token refused: ')}")
    if event.code == ErrorCode.NAME_TAKEN:
        return NameTakenError(f"the relay refused the tunnel name: {reason}")
    if event.code == ErrorCode.NAME_IN_USE:
        return NameInUseError(
            f"the relay refused the tunnel name: {reason}. Stop the agent using it, or pick another name"
            " (devtunnel http PORT --name OTHER-NAME, or no --name for a random one)"
        )
    if event.code == ErrorCode.UNSUPPORTED_VERSION:
        return TunnelError(f"the relay speaks another protocol version: {reason}")
    if event.code == ErrorCode.RULES_REFUSED:
        return TunnelError(f"the relay refused the tunnel's rules: {reason}")
    if event.code == ErrorCode.TOO_MANY_CONNECTIONS:
        return TunnelError(f"the relay refused the connection: {reason}")
    if event.code == ErrorCode.NO_ERROR:
        return TunnelError(f"the relay ended the tunnel: {reason}")
    return RelayUnreachableError(f"the relay turned the tunnel away: {reason}")
