"""What a public request head must look like before it is forwarded anywhere.

One rule set, applied by the relay to every head it parses and again by the agent to every
request a relay sends it (a hostile or outdated relay included):

- the method is an HTTP token;
- the method is not ``CONNECT``;
- the request target is origin-form (``/path?query``), or ``*`` for ``OPTIONS`` only.
  Authority-form (``host:port``) and anything else that does not start with ``/``
  (``*@host:port/x``, ``@host/x``) are refused: glued after an authority, such text names
  another host (RFC 3986 reads ``*@`` as user info). Absolute-form (``http://host/x``) is refused
  here too: the relay, which must accept it as a server does (RFC 9112 3.2.2), first makes it
  origin-form with the authority as the Host (:func:`absolute_form`), so what reaches this
  check, and the agent, is origin-form;
- the target holds no space, control character or DEL;
- there is at most one ``Host`` header (two let the router and the service disagree), and
  its value is a host and an optional port (``uri-host [":" port]``, RFC 9110 7.2): no user
  info (``evil@name``), path, space, control or other byte a host name or address never holds,
  which would make the router and the service read different hosts; a port with no host
  before it (``:80``, ``:``) is not a host either;
- an upgrade request (``Connection: upgrade``) carries no body;
- there is at most one ``Content-Length``, and it is a number (up to 18 digits): the agent
  writes a body of that length as it comes, so it and the service must read the same length
  (``declared_length``); a request that ends with its head (``ended``) declares none;
- the scheme a relay says the client came by is one of ``SCHEMES`` (the agent checks it:
  captures and exports put it before the Host, so another would make them a URL elsewhere).

Each check returns ``None`` when the value is fine, else a short sentence saying why not. The
sentence quotes the value as it came (``values.terminal.quoted``, bytes that are not UTF-8 as
U+FFFD): each output escapes it once, the log's formatter, the inspector and the CLI, and the
400 answer to the client (:func:`answer_text`), so a control byte never reaches a terminal.
"""

from __future__ import annotations

import re
from devtunnel.values.http1 import (
    LENGTH_DIGITS, NOT_IN_TOKEN, OWS, content_length_digits, is_token, other_coding, refused_bytes,
)
from devtunnel.values.terminal import escape, quoted, read_utf8_json
from collections.abc import Iterable

__all__ = [
    "SCHEMES", "USUAL_VERSIONS", "absolute_form", "answer_text", "declared_length", "field_is_safe", "fields_are_safe", "head_problem",
    "host_problem", "method_problem", "scheme_problem", "target_problem", "version_problem",
]

# RFC 9110 5.6.2: token = 1*tchar.
# Bytes a request target may not hold: controls, space, DEL (high bytes pass, as in paths
# that clients send unencoded; they cannot end the request line).
_FORBIDDEN_IN_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_TARGET_REFUSED = refused_bytes(_FORBIDDEN_IN_TARGET)
_SHOWN = 80  # characters of a refused value quoted back
# RFC 3986 3.2.2: uri-host = IP-literal / IPv4address / reg-name, then ":" port (RFC 9110 7.2).
# A reg-name is unreserved, sub-delims and %XX; an IP-literal is "[" IPv6 or IPvFuture "]".
# A port needs a host before it (":80" names no host); an empty value passes (RFC 9112 3.2).
# (Possessive runs: a usual host is matched in one step per run, not one per byte.)
_HOST = re.compile(rb"(?:(?:\[[0-9A-Za-z._~!$&'()*+,;=:-]+\]|(?:[0-9A-Za-z._~!$&'()*+,;=-]++|%[0-9A-Fa-f]{2})++)(?::[0-9]*)?)?")
# A byte no part of a Host value ever holds (the first one found is named in the answer).
_NOT_IN_HOST = re.compile(rb"[^0-9A-Za-z._~!$&'()*+,;=%:\[\]-]")
# Host values found good lately: a keep-alive client sends the same one with every request,
# looked up here for a fraction of the match's cost. At most _HOSTS_KEPT of them, none longer
# than _HOST_KEPT_SIZE (a host name and a port), so a client inventing hosts costs little memory.
_GOOD_HOSTS: dict[bytes, None] = {}
_HOSTS_KEPT = 1024
_HOST_KEPT_SIZE = 300


SCHEMES = frozenset(("http", "https", "ws", "wss"))
"""How a public client may have reached the relay: the schemes a REQUEST may name
(docs/protocol.md; a relay's rule notice of a WebSocket names ``ws`` or ``wss``)."""


def scheme_problem(scheme: str) -> str | None:
    """Why ``scheme``, which a relay says a client came by, is none a client comes by, or None."""
    if scheme in SCHEMES:
        return None
    return f"the relay says the client came by scheme {quoted(scheme[:_SHOWN])}, which is none of http, https, ws, wss"


USUAL_VERSIONS = frozenset((b"1.1", b"1.0"))
"""The HTTP versions requests come in: a caller finds them in this set before asking ``version_problem``."""
_VERSION = re.compile(rb"(?:HTTP/)?[0-9](?:\.[0-9])?")


def version_problem(version: bytes) -> str | None:
    """Why ``version``, the HTTP version a relay says a request came in, is none, or None.

    A version is a digit, a dot and a digit (``1.1``; a relay sends what its parser read, ``2.0``
    or ``0.9`` too), ``HTTP/`` before it at most. Any other bytes are a relay's, not a client's:
    the record and its exports write the version after ``HTTP/`` (a comment of the httpie
    format, the raw request line), where an escape sequence would reach a terminal.
    """
    if version in USUAL_VERSIONS or _VERSION.fullmatch(version):
        return None
    return f"the relay says the request came in HTTP version {_shown(version)}, which is no HTTP version"


def _shown(value: bytes) -> str:
    """``value`` quoted for a message, as it came (cut): the message's outputs escape it."""
    return quoted(read_utf8_json(value[:_SHOWN]) + ("…" if len(value) > _SHOWN else ""))


def answer_text(problem: str) -> str:
    """The body of a plain-text answer stating ``problem`` to a client: escaped once, as the
    client's terminal (``curl``) shows it as it is."""
    return escape(problem, keep="\n")


_UNSAFE_IN_VALUE = refused_bytes(re.compile(rb"[\r\n\0]"))


def field_is_safe(name: bytes, value: bytes) -> bool:
    """Whether a header field can be written on a line of its own as ``name: value``.

    The name is a token (RFC 9110 5.1, the rule of ``values.http1``), and the value holds none
    of CR, LF, NUL, which would start another field or end the head: such a field is dropped,
    never written. A name that is empty or holds a space (``Transfer-Encoding : chunked``),
    which a relay could send and the public side never passes, would be read by one local
    server as a field of that name and refused or ignored by another: a body framed one way by
    the agent and another by the service, on a connection kept alive for the next request.

    (Translate tables rather than ``b"\\r" in value``: CPython's ``in`` on bytes first tries
    the needle as an integer, and formats and drops a TypeError for a bytes needle, about
    2,000 instructions each time.)
    """
    return bool(name) and 0 not in name.translate(NOT_IN_TOKEN) and 0 not in value.translate(_UNSAFE_IN_VALUE)


def fields_are_safe(names: tuple[bytes, ...], values: tuple[bytes, ...]) -> bool:
    """Whether ``field_is_safe(name, value)`` holds for every field, asked once.

    ``names`` and ``values`` are the fields' names and values (``zip(*fields)``); a forbidden
    byte is in one of them exactly when it is in all of them joined.
    """
    return all(names) and field_is_safe(b"".join(names), b"".join(values))


_USUAL_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"))
"""Methods that are tokens, found in a set before the token rule is asked (a test holds each to it)."""


def method_problem(method: bytes) -> str | None:
    """Why ``method`` is not an HTTP method token, or None."""
    if method not in _USUAL_METHODS and not is_token(method):
        return f"the method {_shown(method)} is not an HTTP token"
    return None


def target_problem(method: bytes, target: bytes) -> str | None:
    """Why ``target`` may not be forwarded with ``method``, or None.

    Accepted: origin-form, a target starting with ``/``, and ``*`` with ``OPTIONS``.
    """
    if method == b"CONNECT":
        return "CONNECT is not forwarded: a tunnel carries requests for its own service only"
    if target == b"*":
        if method == b"OPTIONS":
            return None
        return "the request target '*' is only allowed with OPTIONS"
    if not target.startswith(b"/"):
        return f"the request target {_shown(target)} is not a path: send /path?query (origin-form)"
    if 0 in target.translate(_TARGET_REFUSED):  # _FORBIDDEN_IN_TARGET.search(target)
        return f"the request target {_shown(target)} holds a space or a control character"
    return None


# RFC 9112 3.2.2: absolute-form = absolute-URI; for "http" and "https" (RFC 9110 4.2), the
# scheme, "//", an authority and a path-abempty, then "?" query. Scheme case does not matter.
_ABSOLUTE = re.compile(rb"(?i:https?)://([^/?#]*)([/?#].*)?", re.DOTALL)


def absolute_form(target: bytes, method: bytes = b"GET") -> tuple[bytes, bytes] | str | None:
    """A request target in absolute-form (``http://host:port/path?q``) as a server reads it
    (RFC 9112 3.2.2): its authority, which stands for the Host header, and the origin-form
    target (``/path?q``; ``/`` for an empty path, ``*`` for an ``OPTIONS`` with neither path
    nor query: RFC 9112 3.2.4) to forward; a sentence saying why it cannot
    be read so (an authority with user info, no host, or a byte no host holds); None for a target
    that is not in absolute-form (an ``http`` or ``https`` URI), which ``target_problem`` judges.

    The authority only names the host the client meant: it routes the request as a Host would,
    and the tunnel's local service is still the only place the request goes.
    """
    found = _ABSOLUTE.fullmatch(target)
    if found is None:
        return None
    authority, rest = found.group(1), found.group(2) or b""
    if b"@" in authority:
        return f"the request target {_shown(target)} holds user info (name@) in its authority"
    if not authority or authority.startswith(b":") or _HOST.fullmatch(authority) is None:
        return f"the request target {_shown(target)} does not name a host (and an optional port) after //"
    if not rest and method == b"OPTIONS":
        return authority, b"*"
    if not rest.startswith(b"/"):
        rest = b"/" + rest  # an empty path is "/" (RFC 9112 3.2.1), before a query too
    return authority, rest


def host_problem(host: bytes) -> str | None:
    """Why ``host``, a Host header's value, is not a host and an optional port, or None.

    An empty value passes (RFC 9112 3.2 allows it for a target without an authority), a port
    alone (``:80``, ``:``) does not: it names no host. Spaces and tabs after the value pass
    (whitespace around a field value is not part of it, RFC 9110 5.5; llhttp keeps what
    follows the value).
    """
    value = host.rstrip(b" \t")
    if _HOST.fullmatch(value) is not None:
        if len(host) <= _HOST_KEPT_SIZE:
            if len(_GOOD_HOSTS) >= _HOSTS_KEPT:
                _GOOD_HOSTS.clear()
            _GOOD_HOSTS[host] = None
        return None
    bad = _NOT_IN_HOST.search(value)
    if bad is None:
        if value.startswith(b":") and b":" not in value[1:]:
            return f"the Host header {_shown(host)} has a port but no host name or address before it"
        return f"the Host header {_shown(host)} is not a host name or address with an optional port"
    byte = bad.group()[0]
    if byte == 0x40:  # @
        return f"the Host header {_shown(host)} holds user info (name@): a Host is a host and an optional port"
    what = quoted(chr(byte)) if 0x20 < byte < 0x7F else f"byte 0x{byte:02x}"
    return f"the Host header {_shown(host)} holds {what}, which no host name or address does"


_MAX_LENGTH_DIGITS = LENGTH_DIGITS  # a Content-Length of up to 999 PB: always an int, never a 4,300-digit parse


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The body length a ``Content-Length`` field declares, or -1 without one.

    For headers that passed ``head_problem`` (one such field, a number)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value.strip(b" \t"))
    return -1


def head_problem(
    method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]], *, upgrade: bool = False,
    ended: bool = False,
) -> str | None:
    """Why a request head may not be forwarded, or None.

    Args:
        method: the request method.
        target: the request target as received.
        headers: the header fields (names in any case).
        upgrade: the request asks to switch protocols (``Connection: upgrade`` with ``Upgrade``).
        ended: the request ends with its head: no body follows (a REQUEST with END_STREAM).
    """
    problem = method_problem(method) or target_problem(method, target)
    if problem is not None:
        return problem
    hosts = 0
    host = b""
    lengths = 0
    length = b""
    body = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"host":
            hosts += 1
            host = value
        elif lower == b"content-length":
            lengths += 1
            length = value
        elif lower == b"transfer-encoding":
            body = True
            if other_coding(value):
                return (f"the request's Transfer-Encoding {_shown(value.strip(OWS))} names a coding other than chunked,"
                        " which a tunnel cannot carry")
    if hosts > 1:
        return "the request has more than one Host header"
    if hosts and host not in _GOOD_HOSTS:
        problem = host_problem(host)
        if problem is not None:
            return problem
    if lengths:
        if lengths > 1:
            return "the request has more than one Content-Length header"
        digits = content_length_digits(length)
        if digits is None or len(digits) > _MAX_LENGTH_DIGITS:
            return f"the Content-Length {_shown(length.strip(OWS))} is not a number of bytes"
        if digits.lstrip(b"0"):
            body = True
        if ended and body:
            return f"the request declares a body of {int(digits)} bytes (Content-Length) but carries none"
    if upgrade and body:
        return "an upgrade request must not carry a body"
    return None
