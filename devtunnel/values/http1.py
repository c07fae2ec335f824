"""HTTP/1.1 header rules and chunked framing, as bytes in and bytes out.

One place says which header fields describe a connection rather than a message (hop-by-hop,
RFC 9110 section 7.6.1) and which frame the body (Content-Length, Transfer-Encoding), what a
Content-Length must be (digits), and how a body is written in chunked coding (RFC 9112
section 7.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = [
    "is_token",
    "OWS",
    "field_value",
    "content_length_digits",
    "connection_tokens",
    "refused_bytes",
    "HOP_BY_HOP",
    "FRAMING",
    "Field",
    "connection_listed",
    "is_chunked",
    "other_coding",
    "has_field",
    "chunked",
]

Field = tuple[bytes, bytes]

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 9110 section 5.6.2: field names, methods, cookie names
_TOKEN_STR = re.compile(_TOKEN)
_TOKEN_BYTES = re.compile(_TOKEN.encode())


def is_token(value: str | bytes) -> bool:
    """Whether ``value`` is an HTTP token (a field name, a method): one rule for every place that asks."""
    if isinstance(value, bytes):
        return _TOKEN_BYTES.fullmatch(value) is not None
    return _TOKEN_STR.fullmatch(value) is not None


OWS: Final = b" \t"
"""Optional whitespace around a field value (RFC 9110 section 5.6.3). (Final: compiled, a
module's plain global is looked up in a dict on every use.)"""


def field_value(raw: bytes) -> bytes:
    """A field's value without the whitespace around it, which is no part of it (RFC 9110 section
    5.5). llhttp drops what comes before a value but keeps what comes after, and h11 (what
    replays send with) refuses a value that ends in it."""
    return raw.strip(OWS)


def content_length_digits(value: bytes) -> bytes | None:
    """A Content-Length value's digits without the whitespace around them (``OWS``), or None
    unless they are digits alone: no sign, no other character, and no other script's digits
    (``bytes.isdigit`` knows ASCII digits only). Leading zeros are kept: each caller bounds the
    number, or compares it, as its own contract says."""
    digits = value.strip(OWS)
    return digits if digits.isdigit() else None


def connection_tokens(value: bytes) -> list[bytes]:
    """The options a ``Connection`` field's value lists, lower-case (``close``, ``keep-alive``,
    the names of hop-by-hop fields: RFC 9110 7.6.1)."""
    return [token.strip().lower() for token in value.split(b",") if token.strip()]


def refused_bytes(rule: re.Pattern[bytes]) -> bytes:
    """A ``bytes.translate`` table that maps each byte ``rule`` finds to 0 and every other byte
    to itself: for a rule that is one character class, ``0 in data.translate(table)`` says what
    ``rule.search(data)`` says, for a fraction of the instructions (a regex search tests a
    character class byte by byte, about ten instructions a byte, with about 500 more a call;
    tests/net/test_relay_header_rules.py holds the two to each other)."""
    return bytes(0 if rule.search(bytes([byte])) else byte for byte in range(256))


HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
"""Lower-case names of fields that describe one connection and do not travel past it."""

FRAMING = frozenset({b"content-length", b"transfer-encoding"})
"""Lower-case names of the fields that say where a body ends: whoever sends the body sets them."""


def connection_listed(fields: Iterable[Field]) -> frozenset[bytes]:
    """The lower-case field names a ``Connection`` header lists (they are hop-by-hop too)."""
    return frozenset(
        token.strip().lower()
        for name, value in fields
        if name.lower() == b"connection"
        for token in value.split(b",")
        if token.strip()
    )


def is_chunked(fields: Iterable[Field]) -> bool:
    """True when the last transfer coding named is ``chunked`` (the body is framed by chunks)."""
    codings = [
        c.strip().lower() for name, value in fields if name.lower() == b"transfer-encoding" for c in value.split(b",")
    ]
    codings = [c for c in codings if c]
    return bool(codings) and codings[-1] == b"chunked"


def other_coding(value: bytes) -> bool:
    """Whether a ``Transfer-Encoding`` value names a coding other than ``chunked`` (``gzip,
    chunked``). The tunnel carries none: relay and agent frame bodies themselves, and a coded
    body passed on without its coding would be taken as plain."""
    return any(c.strip(OWS).lower() not in (b"chunked", b"") for c in value.split(b","))


def has_field(fields: Iterable[Field], name: bytes) -> bool:
    """True when a field called ``name`` (lower-case) is present."""
    return any(n.lower() == name for n, _ in fields)


def chunked(body: bytes) -> bytes:
    """``body`` in chunked coding: one chunk (none when empty), then the last chunk and no trailers."""
    head = b"%x\r\n" % len(body) + body + b"\r\n" if body else b""
    return head + b"0\r\n\r\n"
