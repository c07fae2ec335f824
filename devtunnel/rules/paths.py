"""The path of a request as rules judge it: as a local service routes it (docs/policy.md, "match")."""

from __future__ import annotations

import re

from devtunnel.values.terminal import read_utf8_json

__all__ = ["rule_path", "rule_target"]

_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_SLASHES = re.compile(rb"/{2,}")


def rule_target(target: bytes) -> bytes:
    r"""The request target as rules match it: its path as a local service routes it.

    Starlette, Flask and Go decode ``/%61dmin`` to ``/admin``, servers and browsers resolve
    ``/x/../admin``, and Node's URL parsers read ``\`` as ``/`` (``/public\..\admin`` is
    ``/admin`` to ``new URL``), and Tomcat and Jetty drop a segment's ``;`` parameters
    (``/public/..;/admin`` and ``/;x/admin`` are ``/admin`` to them); a rule on ``path:/admin``
    must judge those too, or it is a guard with a side door. So a segment that is empty, ``.``
    or ``..`` but for its ``;`` parameters loses them (``/a;v=1`` stays: ``path:/a`` matches it
    as it is), the path is percent-decoded once, a backslash taken for a slash, its ``.`` and
    ``..`` segments resolved and repeated slashes merged; the query is left as it came. Records
    keep the target as sent.
    """
    path, sep, query = target.partition(b"?")
    if not path.startswith(b"/"):
        return target  # "*" (OPTIONS) or a form no rule path matches
    if b";" in path:
        path = b"/".join(_bare(segment) for segment in path.split(b"/"))
    path = _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), path).replace(b"\\", b"/")
    path = _SLASHES.sub(b"/", path)
    out: list[bytes] = []
    for segment in path.split(b"/")[1:]:
        if segment == b"..":
            if out:
                out.pop()
        elif segment not in (b".", b""):
            out.append(segment)
    last = path.rsplit(b"/", 1)[-1]
    trailing = b"/" if last in (b"", b".", b"..") and out else b""
    return b"/" + b"/".join(out) + trailing + sep + query


def rule_path(prefix: str) -> str:
    """A ``path:`` prefix a rule is given, read as ``rule_target`` reads a request's path, so
    ``path:"/files/a%20b"`` matches the request ``/files/a%20b`` (judged as ``/files/a b``)."""
    if not prefix.startswith("/"):
        return prefix
    return read_utf8_json(rule_target(prefix.encode("utf-8")))


def _bare(segment: bytes) -> bytes:
    """``segment`` without its ``;`` parameters when it is nothing else, ``.`` or ``..``, those
    written with percent-escapes too: Tomcat takes the parameters off first and decodes after, so
    ``/public/%2e%2e;/admin`` is ``/admin`` to it."""
    bare = segment.partition(b";")[0]
    decoded = _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), bare)
    return bare if decoded in (b"", b".", b"..") else segment
