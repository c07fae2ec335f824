"""What every exporter shares: the ``Export`` result, redaction, and the safe-text test.

Captured bytes are hostile. An exporter puts them inline in its text only when they are valid
UTF-8 without control or format characters (which could rewrite a terminal line, hide text
with bidi overrides, or be turned into a newline by a terminal's line discipline); anything
else goes into a side file in ``Export.files``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from devtunnel.capture.model import Exchange, Headers
from devtunnel.errors import ExportError

__all__ = [
    "Export",
    "Exporter",
    "REDACTED",
    "SECRET_HEADERS",
    "redact_headers",
    "safe_text",
    "file_stem",
    "TOKEN_RE",
    "require_exchanges",
]

REDACTED = "<redacted>"
"""The placeholder that replaces a secret value."""

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "stripe-signature",
        "x-hub-signature",
        "x-hub-signature-256",
        "x-slack-signature",
        "x-twilio-signature",
        "x-twilio-email-event-webhook-signature",
        "x-shopify-hmac-sha256",
        "svix-signature",
        "webhook-signature",
        "x-signature",
        "x-webhook-signature",
        "x-gitlab-token",
        "x-line-signature",
        "x-square-hmacsha256-signature",
        "x-square-signature",
        "paypal-transmission-sig",
        "x-zm-signature",
        "linear-signature",
        "x-discord-signature",
        "x-signature-ed25519",
    }
)
"""Header names (lower-case) whose values are credentials or signatures."""

TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An HTTP token (RFC 9110 section 5.6.2): what a header name or method may be."""

_AUTH_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9!#$%&'*+\-.^_`|~]*) +\S")


@dataclass(frozen=True)
class Export:
    """The result of an export.

    Attributes:
        text: the output, safe to print to a terminal.
        files: side files the text refers to, keyed by the path exactly as the text spells it
            (relative to the directory the text is used in, unless absolute). Nothing is written
            by the exporter: the caller writes these before running the text.
    """

    text: str
    files: dict[str, bytes] = field(default_factory=dict)


Exporter = Callable[..., Export]
"""``exporter(exchanges: Sequence[Exchange], **options) -> Export``."""


def safe_text(raw: bytes, *, allow: str = "\t") -> str | None:
    """``raw`` as text if it can be shown and pasted as is, else None.

    Args:
        raw: captured bytes.
        allow: control characters tolerated (tab by default; add ``"\\n"`` for bodies).

    Returns:
        The UTF-8 text, or None when ``raw`` is not UTF-8 or holds a control, format,
        surrogate, private-use or unassigned character outside ``allow``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.isascii():
        # Fast path for the common case: printable ASCII plus the allowed controls.
        if all(" " <= ch < "\x7f" or ch in allow for ch in text):
            return text
        return None
    for ch in text:
        if ch in allow:
            continue
        if unicodedata.category(ch)[0] == "C":
            return None
    return text


def _redact_value(name: str, value: bytes) -> bytes:
    key = name.lower()
    text = value.decode("latin-1")
    if key in ("authorization", "proxy-authorization"):
        # Keep the scheme ("Bearer", "Basic"): it tells the reader what kind of credential it was.
        m = _AUTH_SCHEME_RE.match(text)
        if m:
            return f"{m.group(1)} {REDACTED}".encode()
    elif key == "cookie":
        # Keep the cookie names, which are not secret and say which session it was.
        names = [part.split("=", 1)[0].strip() for part in text.split(";") if part.strip()]
        if names and all(TOKEN_RE.match(n.encode("latin-1")) for n in names):
            return "; ".join(f"{n}={REDACTED}" for n in names).encode()
    elif key == "set-cookie":
        first, sep, attrs = text.partition(";")
        cookie_name = first.split("=", 1)[0].strip()
        if "=" in first and TOKEN_RE.match(cookie_name.encode("latin-1")):
            return f"{cookie_name}={REDACTED}{sep}{attrs}".encode("latin-1")
    return REDACTED.encode()


def redact_headers(headers: Headers) -> Headers:
    """A copy of ``headers`` with credentials and signatures replaced by ``<redacted>``.

    The names in ``SECRET_HEADERS`` are replaced; ``Authorization`` keeps its scheme and
    cookies keep their names, so the reader still knows what was there.
    """
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers.fields:
        text_name = name.decode("latin-1")
        if text_name.lower() in SECRET_HEADERS:
            value = _redact_value(text_name, value)
        out.append((name, value))
    return Headers(out)


_STEM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def file_stem(exchange: Exchange, index: int) -> str:
    """A file-name-safe stem for an exchange's side files (its id when that is safe)."""
    if _STEM_RE.match(exchange.id):
        return exchange.id
    return f"exchange-{index + 1}"


def require_exchanges(exchanges: Sequence[Exchange]) -> None:
    """Raise ``ExportError`` when there is nothing to export."""
    if not exchanges:
        raise ExportError("nothing to export: no exchanges given")
