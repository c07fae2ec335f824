"""What a public request head must look like before it is forwarded anywhere.

One rule set, applied by the relay to every head it parses and again by the agent to every
request a relay sends it (a hostile or outdated relay included):

- the method is an HTTP token;
- the method is not ``CONNECT``;
- the request target is origin-form (``/path?query``), or ``*`` for ``OPTIONS`` only.
  Absolute-form (``http://host/x``), authority-form (``host:port``) and anything else that
  does not start with ``/`` (``*@host:port/x``, ``@host/x``) are refused: glued after an
  authority, such text names another host (RFC 3986 reads ``*@`` as user info);
- the target holds no space, control character or DEL;
- there is at most one ``Host`` header (two let the router and the service disagree);
- an upgrade request (``Connection: upgrade``) carries no body.

Each check returns ``None`` when the value is fine, else a short sentence saying why not,
fit to be sent back to the client in a 400 answer.
"""

from __future__ import annotations

import re
from devtunnel.values.http1 import is_token
from collections.abc import Iterable

__all__ = ["field_is_safe", "fields_are_safe", "head_problem", "method_problem", "target_problem"]

# RFC 9110 5.6.2: token = 1*tchar.
# Bytes a request target may not hold: controls, space, DEL (high bytes pass, as in paths
# that clients send unencoded; they cannot end the request line).
_FORBIDDEN_IN_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_SHOWN = 80  # characters of a refused value quoted back


def _shown(value: bytes) -> str:
    """``value`` quoted for a message: repr() escapes control and format characters."""
    text = value[:_SHOWN].decode("utf-8", "backslashreplace")
    return repr(text + ("..." if len(value) > _SHOWN else ""))


def field_is_safe(name: bytes, value: bytes) -> bool:
    """Whether a header field can be written on a line of its own as ``name: value``.

    A name holding ``:`` or any of CR, LF, NUL there would start another field or end the
    head: such a field is dropped, never written.
    """
    return not (b":" in name or b"\r" in name or b"\n" in name or b"\0" in name
                or b"\r" in value or b"\n" in value or b"\0" in value)


_UNSAFE_IN_NAMES = re.compile(rb"[:\r\n\0]")
_UNSAFE_IN_VALUES = re.compile(rb"[\r\n\0]")


def fields_are_safe(names: tuple[bytes, ...], values: tuple[bytes, ...]) -> bool:
    """Whether ``field_is_safe(name, value)`` holds for every field, in two scans at C speed.

    ``names`` and ``values`` are the fields' names and values (``zip(*fields)``); a forbidden
    byte is in one of them exactly when it is in all of them joined.
    """
    return _UNSAFE_IN_NAMES.search(b"".join(names)) is None and _UNSAFE_IN_VALUES.search(b"".join(values)) is None


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
    if _FORBIDDEN_IN_TARGET.search(target):
        return f"the request target {_shown(target)} holds a space or a control character"
    return None


def head_problem(
    method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]], *, upgrade: bool = False
) -> str | None:
    """Why a request head may not be forwarded, or None.

    Args:
        method: the request method.
        target: the request target as received.
        headers: the header fields (names in any case).
        upgrade: the request asks to switch protocols (``Connection: upgrade`` with ``Upgrade``).
    """
    problem = method_problem(method) or target_problem(method, target)
    if problem is not None:
        return problem
    hosts = 0
    body = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"host":
            hosts += 1
        elif lower == b"transfer-encoding" or (lower == b"content-length" and value.strip().lstrip(b"0")):
            body = True
    if hosts > 1:
        return "the request has more than one Host header"
    if upgrade and body:
        return "an upgrade request must not carry a body"
    return None
