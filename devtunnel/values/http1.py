"""HTTP/1.1 header rules and chunked framing, as bytes in and bytes out.

One place says which header fields describe a connection rather than a message (hop-by-hop,
RFC 9110 section 7.6.1) and which frame the body (Content-Length, Transfer-Encoding), what a
Content-Length must be (digits), and how a body is written in chunked coding (RFC 9112
section 7.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from devtunnel.values.terminal import quoted, read_utf8_json

__all__ = [
    "is_token",
    "OWS",
    "field_value",
    "content_length_digits",
    "LENGTH_DIGITS",
    "connection_tokens",
    "refused_bytes",
    "NOT_IN_TOKEN",
    "field_problem",
    "fields_problem",
    "field_lines_problem",
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


LENGTH_DIGITS: Final = 18
"""The most digits (leading zeros counted) of a Content-Length that is passed on: a request's
at the agent (``request_head``), a response's at the relay (``relay.headers``). Under 10^18
bytes, an exbibyte, always an int, never a 4,300-digit parse. A longer one is no body's length
(a client waits for it for ever), overflows a signed 64-bit length in a proxy or client (RFC
9110 8.6), and at the relay reaches ``UNTIL_CLOSE`` (``relay.http``), which says a body ends
with the connection."""


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


_NOT_IN_NAME = refused_bytes(re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]"))  # a byte no token holds
NOT_IN_TOKEN: Final = _NOT_IN_NAME
"""The ``refused_bytes`` table of the bytes no token (a field name) holds: a non-empty ``name``
is a token exactly when ``0 not in name.translate(NOT_IN_TOKEN)``."""
_NOT_IN_VALUE = refused_bytes(re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]"))  # controls but tab (obs-text passes)


def fields_problem(fields: Sequence[Field]) -> str | None:
    """Why a head with these fields cannot be written as HTTP/1.1, or None: the first field
    ``field_problem`` refuses. Asked once for all (a forbidden byte is in one name, or value,
    exactly when it is in all of them joined), so a head that passes costs two joins and two
    translations, whatever its size."""
    names, values = zip(*fields) if fields else ((), ())
    if 0 not in b"".join(names).translate(_NOT_IN_NAME) and 0 not in b"".join(values).translate(_NOT_IN_VALUE) \
            and all(names):
        return None
    return next(problem for name, value in fields if (problem := field_problem(name, value)) is not None)


def field_problem(name: bytes, value: bytes) -> str | None:
    """Why the field ``name: value`` cannot be written in an HTTP/1.1 head, or None.

    The name is a token (RFC 9110 5.1); the value holds no control byte but tab: no CR or LF
    (which would end the field and start another, or end the head), no NUL, no other C0
    control and no DEL (RFC 9110 5.5). One rule for every head devtunnel writes or passes on:
    the local service's response (the agent names the field in its 502), what the relay writes
    to a public client (uvicorn refuses the same bytes, and then could only drop the
    connection), and the headers a rule sets. The sentence quotes the field as it came, cut to 80
    characters: each output escapes it once (a control byte as ``\\x01``).
    """
    if not name or 0 in name.translate(_NOT_IN_NAME):
        return f"the header name {_shown(name)} is not a token"
    at = value.translate(_NOT_IN_VALUE).find(0)
    if at >= 0:
        return f"the value of header {_shown(name)} holds the control byte {value[at]:#04x} at {at}"
    return None


def field_lines_problem(head: bytes) -> str | None:
    """Why the field lines of a raw HTTP/1 head (``head``: its bytes from the start line on, up
    to the empty line or cut anywhere) cannot be passed on, or None: the first field line that
    is folded onto the one before (obs-fold, RFC 9112 5.2), holds no colon, or whose field
    ``field_problem`` refuses. For a message only (a parser said the head was invalid, not
    which field): a line may end in CRLF or LF alone, and a CR anywhere else is a control byte."""
    lines = head.split(b"\n")
    if len(lines) > 1 and not head.endswith(b"\n"):
        lines.pop()  # a line cut by the end of what was read: no judgement on half a line
    for line in lines[1:]:
        line = line[:-1] if line.endswith(b"\r") else line
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            return f"the header line {_shown(line.strip(OWS))} is folded onto the one before it (obs-fold)"
        name, colon, value = line.partition(b":")
        if not colon:
            return f"the header line {_shown(line)} holds no colon"
        problem = field_problem(name, value.strip(OWS))
        if problem is not None:
            return problem
    return None


def _shown(data: bytes) -> str:
    """``data`` quoted for a message, as it came (cut): each output escapes it once."""
    return quoted(read_utf8_json(data[:80]) + ("…" if len(data) > 80 else ""))


HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
"""Lower-case names of fields that describe one connection and do not travel past it."""

FRAMING = frozenset({b"content-length", b"transfer-encoding"})
"""Lower-case names of the fields that say where a body ends: whoever sends the body sets them."""

RELAY_SET = frozenset({b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port", b"forwarded", b"x-real-ip"})
"""Lower-case names of the fields a relay removes from every public request, whatever the client
sent of them, and of which it sets its own ``X-Forwarded-Proto`` and ``X-Forwarded-Host``
(``relay.headers.relay_fields``): they say how the request was addressed and by whom, which an
app builds its URLs and logs from (Rack and Spring read ``Forwarded`` first). The relay appends
to ``X-Forwarded-For`` instead; the exporters undo both (``export.base``)."""


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
