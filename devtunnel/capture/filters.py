"""The filter language: small classes that match an Exchange and compile to SQL.

Two spellings share one grammar and mean the same thing::

    method:POST path:/webhooks status:>=400        fields, juxtaposition is "and"
    ~m POST & ~u /hooks & !~c 200                  mitmproxy's flow filter codes

``parse(expression)`` returns a ``Filter``. A filter is callable on an Exchange and its
``sql()`` returns ``(where, params)`` over the store's tables (``exchanges e``, ``heads``,
``bodies``), so the store filters in SQLite. Both answers are always the same: every leaf's SQL
is never NULL (so ``NOT`` behaves like Python's ``not``), text folding is ASCII-only on both
sides (SQLite's ``lower()`` and ``NOCASE``), and regexes and header matching call the very
functions below, which the store registers on each connection (``REGEXP`` and ``dt_headers``).

Captured data is never interpolated into SQL: every value is a bound parameter.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from devtunnel.capture.model import Exchange, Headers
from devtunnel.errors import FilterSyntaxError

__all__ = [
    "Filter",
    "parse",
    "FILTER_HELP",
    "FIELDS",
    "CODES",
    "regexp",
    "headers_match",
    "headers_text",
]

SqlParams = list[object]

# ---------------------------------------------------------------------------------------------
# Functions shared by the Python side and SQLite (the store registers them on every connection)


@functools.lru_cache(maxsize=512)
def _compiled(pattern: str, binary: bool) -> re.Pattern[str] | re.Pattern[bytes]:
    return re.compile(pattern.encode("utf-8") if binary else pattern)


def regexp(pattern: str, value: object) -> int:
    """SQLite's ``value REGEXP pattern``: 1 when the regex is found in value (text or bytes).

    NULL never matches. Flags travel inside the pattern (``(?i)``), so one cached compile serves
    both the Python filter and SQL.
    """
    if isinstance(value, str):
        return 1 if _compiled(pattern, False).search(value) else 0  # type: ignore[arg-type]
    if isinstance(value, bytes):
        return 1 if _compiled(pattern, True).search(value) else 0  # type: ignore[arg-type]
    return 0


def headers_text(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Header fields as ``name: value`` lines joined by CRLF (what ``~h`` regexes see)."""
    return b"\r\n".join(n + b": " + v for n, v in fields)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def headers_match(fields: Sequence[tuple[bytes, bytes]], op: str, a: str, b: str | None) -> bool:
    """The header predicates of the language, over raw ``(name, value)`` pairs.

    Args:
        fields: the header fields.
        op: ``"has"`` (a field named ``a``, case-insensitive; with ``b``, whose value contains
            ``b``, case-insensitive), ``"re"`` (regex ``a`` found in the ``name: value`` lines)
            or ``"ctype"`` (regex ``a`` found in a Content-Type value).
        a: header name or regex pattern.
        b: value substring for ``"has"``.
    """
    if op == "has":
        name = a.lower()
        for n, v in fields:
            if _decode(n).lower() == name and (b is None or b.lower() in _decode(v).lower()):
                return True
        return False
    if op == "re":
        return bool(_compiled(a, True).search(headers_text(fields)))  # type: ignore[arg-type]
    if op == "ctype":
        rx = _compiled(a, True)
        return any(n.lower() == b"content-type" and rx.search(v) for n, v in fields)  # type: ignore[arg-type]
    raise ValueError(f"unknown header predicate {op!r}")


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _fold(text: str) -> str:
    """ASCII-only lower case: exactly what SQLite's ``lower()`` and ``NOCASE`` do."""
    return text.translate(_ASCII_LOWER)


def _url(ex: Exchange) -> str:
    return ex.url


_URL_SQL = "(e.scheme || '://' || e.host || e.target_text)"

# ---------------------------------------------------------------------------------------------
# The classes


class Filter:
    """A compiled filter expression: ``flt(exchange) -> bool`` and ``flt.sql() -> (where, params)``.

    Leaf classes describe themselves with ``syntax`` (how to write it) and ``help`` (one line);
    ``FILTER_HELP`` is built from them.
    """

    syntax: ClassVar[str] = ""
    help: ClassVar[str] = ""
    cost: int = 1
    """Rough price of one evaluation: 1 a column, 2 a regex, 3 headers, 4 bodies."""

    def __call__(self, ex: Exchange) -> bool:
        raise NotImplementedError

    def sql(self) -> tuple[str, SqlParams]:
        """A WHERE clause over ``exchanges e`` (never NULL) and its parameters."""
        raise NotImplementedError


class MatchAll(Filter):
    """The empty expression: every exchange."""

    syntax = "~all"
    help = "every exchange (also the empty expression)"

    def __call__(self, ex: Exchange) -> bool:
        return True

    def sql(self) -> tuple[str, SqlParams]:
        return "1", []

    def __repr__(self) -> str:
        return "MatchAll()"


def _cheapest_first(parts: Sequence[Filter]) -> list[Filter]:
    # "and" and "or" short-circuit left to right in SQLite and Python alike, and no leaf is
    # ever NULL, so the order of parts changes only the speed: let column tests cut the rows
    # down before any regex, header or body is looked at.
    return sorted(parts, key=lambda p: p.cost)


class And(Filter):
    """Every part matches."""

    syntax = "A B   A and B   A & B"
    help = "both match (writing terms side by side means and)"

    def __init__(self, parts: Sequence[Filter]) -> None:
        self.parts = _cheapest_first(parts)
        self.cost = max(p.cost for p in self.parts)

    def __call__(self, ex: Exchange) -> bool:
        return all(p(ex) for p in self.parts)

    def sql(self) -> tuple[str, SqlParams]:
        return _join(" AND ", self.parts)

    def __repr__(self) -> str:
        return f"And({self.parts!r})"


class Or(Filter):
    """At least one part matches."""

    syntax = "A or B   A | B"
    help = "either matches (and binds tighter than or)"

    def __init__(self, parts: Sequence[Filter]) -> None:
        self.parts = _cheapest_first(parts)
        self.cost = max(p.cost for p in self.parts)

    def __call__(self, ex: Exchange) -> bool:
        return any(p(ex) for p in self.parts)

    def sql(self) -> tuple[str, SqlParams]:
        return _join(" OR ", self.parts)

    def __repr__(self) -> str:
        return f"Or({self.parts!r})"


class Not(Filter):
    """The inner filter does not match."""

    syntax = "not A   -A   !A"
    help = "does not match"

    def __init__(self, inner: Filter) -> None:
        self.inner = inner
        self.cost = inner.cost

    def __call__(self, ex: Exchange) -> bool:
        return not self.inner(ex)

    def sql(self) -> tuple[str, SqlParams]:
        where, params = self.inner.sql()
        return f"(NOT {where})", params

    def __repr__(self) -> str:
        return f"Not({self.inner!r})"


def _join(sep: str, parts: Sequence[Filter]) -> tuple[str, SqlParams]:
    clauses: list[str] = []
    params: SqlParams = []
    for p in parts:
        where, ps = p.sql()
        clauses.append(where)
        params.extend(ps)
    return "(" + sep.join(clauses) + ")", params


class _Leaf(Filter):
    """A filter with one value, built by ``build(value, position)`` from the parsed text."""

    code: ClassVar[str] = ""
    """The field name (``method``) or mitmproxy code (``~m``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({vars(self)!r})"


# --- fields ---------------------------------------------------------------------------------


class Method(_Leaf):
    code = "method"
    syntax = "method:POST"
    help = "request method (case-insensitive)"

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, ex: Exchange) -> bool:
        return _fold(ex.request.method) == _fold(self.value)

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.method = ? COLLATE NOCASE)", [self.value]


class Path(_Leaf):
    code = "path"
    syntax = "path:/webhooks   path:~REGEX"
    help = "path starts with the value (or matches the regex after ~)"

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, ex: Exchange) -> bool:
        return ex.request.path.startswith(self.prefix)

    def sql(self) -> tuple[str, SqlParams]:
        # instr() finds the first occurrence, so "= 1" is exactly startswith, and no LIKE
        # wildcard in captured or typed text can mean anything.
        return "(instr(e.path, ?) = 1)", [self.prefix]


class Host(_Leaf):
    code = "host"
    syntax = "host:api.example"
    help = "Host header contains the value (case-insensitive)"

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, ex: Exchange) -> bool:
        return _fold(self.value) in _fold(ex.request.host)

    def sql(self) -> tuple[str, SqlParams]:
        return "(instr(lower(e.host), ?) > 0)", [_fold(self.value)]


class Tunnel(_Leaf):
    code = "tunnel"
    syntax = "tunnel:NAME"
    help = "recorded by the tunnel with this name (case-insensitive)"

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, ex: Exchange) -> bool:
        return _fold(ex.tunnel) == _fold(self.value)

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.tunnel = ? COLLATE NOCASE)", [self.value]


class Url(_Leaf):
    code = "url"
    syntax = "WORD   url:WORD"
    help = "a bare word: the URL contains it (case-insensitive)"

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, ex: Exchange) -> bool:
        return _fold(self.value) in _fold(_url(ex))

    def sql(self) -> tuple[str, SqlParams]:
        return f"(instr(lower({_URL_SQL}), ?) > 0)", [_fold(self.value)]


Bound = tuple[str, float]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class _Compare(_Leaf):
    """A number compared with one or two bounds (``>=400``, ``4xx``, ``200-299``)."""

    column: ClassVar[str] = ""

    def __init__(self, bounds: Sequence[Bound]) -> None:
        self.bounds = list(bounds)

    def _value(self, ex: Exchange) -> float | None:
        raise NotImplementedError

    def __call__(self, ex: Exchange) -> bool:
        value = self._value(ex)
        return value is not None and all(_OPS[op](value, n) for op, n in self.bounds)

    def sql(self) -> tuple[str, SqlParams]:
        # "IS NOT NULL AND" keeps the clause 0 (never NULL) for exchanges without a value.
        terms = [f"{self.column} IS NOT NULL"] + [f"{self.column} {op} ?" for op, _ in self.bounds]
        return "(" + " AND ".join(terms) + ")", [n for _, n in self.bounds]


class Status(_Compare):
    code = "status"
    syntax = "status:404  status:4xx  status:>=400  status:200-299"
    help = "response status: number, class, comparison (> >= < <= = !=) or range"
    column = "e.status"

    def _value(self, ex: Exchange) -> float | None:
        return ex.status


class Duration(_Compare):
    code = "dur"
    syntax = "dur:>500ms  dur:<2s  dur:100ms-1s"
    help = "total duration (units ms, s, m; ms when omitted)"
    column = "e.duration"

    def _value(self, ex: Exchange) -> float | None:
        return ex.duration


class Size(_Compare):
    code = "size"
    syntax = "size:>1mb  size:<=512"
    help = "response body size (units b, kb, mb, gb; bytes when omitted)"
    column = "e.size"

    def _value(self, ex: Exchange) -> float | None:
        return ex.size


def _headers_sql(op: str, a: str, b: str | None, sides: str) -> tuple[str, SqlParams]:
    cols = {"both": ("h.req", "h.res"), "request": ("h.req",), "response": ("h.res",)}[sides]
    test = " OR ".join(f"dt_headers({c}, ?, ?, ?)" for c in cols)
    return (
        f"EXISTS (SELECT 1 FROM heads h WHERE h.id = e.id AND ({test}))",
        [x for _ in cols for x in (op, a, b)],
    )


def _headers_of(ex: Exchange, sides: str) -> list[Headers]:
    out: list[Headers] = []
    if sides in ("both", "request"):
        out.append(ex.request.headers)
    if sides in ("both", "response") and ex.response is not None:
        out.append(ex.response.headers)
    return out


class Header(_Leaf):
    code = "header"
    syntax = "header:NAME  header:NAME=VALUE"
    help = "request or response has the header (whose value contains VALUE, case-insensitive)"
    cost = 3

    def __init__(self, name: str, value: str | None = None) -> None:
        self.name = name
        self.value = value

    def __call__(self, ex: Exchange) -> bool:
        return any(headers_match(h.fields, "has", self.name, self.value) for h in _headers_of(ex, "both"))

    def sql(self) -> tuple[str, SqlParams]:
        return _headers_sql("has", self.name, self.value, "both")


def _bodies_sql(test: str, sides: str, params: SqlParams) -> tuple[str, SqlParams]:
    cols = {"both": ("b.req", "b.res"), "request": ("b.req",), "response": ("b.res",)}[sides]
    clause = " OR ".join(test.format(col=c) for c in cols)
    return (
        f"EXISTS (SELECT 1 FROM bodies b WHERE b.id = e.id AND ({clause}))",
        [p for _ in cols for p in params],
    )


def _bodies_of(ex: Exchange, sides: str) -> list[bytes]:
    out: list[bytes] = []
    if sides in ("both", "request"):
        out.append(ex.request.body)
    if sides in ("both", "response") and ex.response is not None:
        out.append(ex.response.body)
    return out


class Body(_Leaf):
    code = "body"
    syntax = "body:invoice.paid"
    help = "request or response body contains the text (exact bytes, case-sensitive)"
    sides: ClassVar[str] = "both"
    cost = 4

    def __init__(self, value: str) -> None:
        self.needle = value.encode("utf-8")

    def __call__(self, ex: Exchange) -> bool:
        return any(self.needle in body for body in _bodies_of(ex, self.sides))

    def sql(self) -> tuple[str, SqlParams]:
        # Both sides are BLOBs, so instr() compares bytes (NUL bytes included).
        return _bodies_sql("instr({col}, ?) > 0", self.sides, [self.needle])


class RequestBody(Body):
    code = "req.body"
    syntax = "req.body:TEXT"
    help = "request body contains the text"
    sides = "request"


class ResponseBody(Body):
    code = "res.body"
    syntax = "res.body:TEXT"
    help = "response body contains the text"
    sides = "response"


class Error(_Leaf):
    code = "error"
    syntax = "error   error:local_refused"
    help = "ended in an error (of this kind)"

    def __init__(self, kind: str | None = None) -> None:
        self.kind = kind

    def __call__(self, ex: Exchange) -> bool:
        return ex.error is not None if self.kind is None else ex.error == self.kind

    def sql(self) -> tuple[str, SqlParams]:
        if self.kind is None:
            return "(e.error IS NOT NULL)", []
        return "(e.error IS NOT NULL AND e.error = ?)", [self.kind]


class Replay(_Leaf):
    code = "replay"
    syntax = "replay"
    help = "is a replay of another exchange"

    def __call__(self, ex: Exchange) -> bool:
        return ex.replay_of is not None

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.replay_of IS NOT NULL)", []


class WebSocket(_Leaf):
    code = "ws"
    syntax = "ws"
    help = "is a WebSocket session"

    def __call__(self, ex: Exchange) -> bool:
        return bool(ex.websocket)

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.websocket = 1)", []


# --- mitmproxy codes ------------------------------------------------------------------------


class _Regex(_Leaf):
    """A mitmproxy-style regex filter; ``flags`` are carried inside the pattern."""

    flags: ClassVar[str] = ""
    """Inline flags (``i``, ``m``, ``s``) added in front of the user's pattern."""
    binary: ClassVar[bool] = False
    cost = 2

    def __init__(self, pattern: str) -> None:
        self.user_pattern = pattern
        self.pattern = (f"(?{self.flags})" if self.flags else "") + pattern

    def _search(self, value: str | bytes) -> bool:
        return bool(regexp(self.pattern, value))


class _ColumnRegex(_Regex):
    column: ClassVar[str] = ""

    def _value(self, ex: Exchange) -> str | None:
        raise NotImplementedError

    def __call__(self, ex: Exchange) -> bool:
        value = self._value(ex)
        return value is not None and self._search(value)

    def sql(self) -> tuple[str, SqlParams]:
        return f"({self.column} REGEXP ?)", [self.pattern]


class PathRegex(_ColumnRegex):
    code = "path:~"
    syntax = "path:~REGEX"
    help = "path matches the regex"
    column = "e.path"

    def _value(self, ex: Exchange) -> str | None:
        return ex.request.path


class MMethod(_ColumnRegex):
    code = "~m"
    syntax = "~m REGEX"
    help = "method matches (case-insensitive)"
    flags = "i"
    column = "e.method"

    def _value(self, ex: Exchange) -> str | None:
        return ex.request.method


class MUrl(_ColumnRegex):
    code = "~u"
    syntax = "~u REGEX"
    help = "URL matches (case-insensitive)"
    flags = "i"
    column = _URL_SQL

    def _value(self, ex: Exchange) -> str | None:
        return _url(ex)


class MDomain(_ColumnRegex):
    code = "~d"
    syntax = "~d REGEX"
    help = "Host matches (case-insensitive)"
    flags = "i"
    column = "e.host"

    def _value(self, ex: Exchange) -> str | None:
        return ex.request.host


class _HeadRegex(_Regex):
    op: ClassVar[str] = "re"
    sides: ClassVar[str] = "both"
    binary = True
    cost = 3

    def __call__(self, ex: Exchange) -> bool:
        return any(headers_match(h.fields, self.op, self.pattern, None) for h in _headers_of(ex, self.sides))

    def sql(self) -> tuple[str, SqlParams]:
        return _headers_sql(self.op, self.pattern, None, self.sides)


class MHead(_HeadRegex):
    code = "~h"
    syntax = "~h REGEX"
    help = "a request or response 'name: value' header line matches (case-insensitive)"
    flags = "im"


class MHeadRequest(MHead):
    code = "~hq"
    syntax = "~hq REGEX"
    help = "a request header line matches"
    sides = "request"


class MHeadResponse(MHead):
    code = "~hs"
    syntax = "~hs REGEX"
    help = "a response header line matches"
    sides = "response"


class MContentType(_HeadRegex):
    code = "~t"
    syntax = "~t REGEX"
    help = "request or response Content-Type matches (case-insensitive)"
    flags = "i"
    op = "ctype"


class MContentTypeRequest(MContentType):
    code = "~tq"
    syntax = "~tq REGEX"
    help = "request Content-Type matches"
    sides = "request"


class MContentTypeResponse(MContentType):
    code = "~ts"
    syntax = "~ts REGEX"
    help = "response Content-Type matches"
    sides = "response"


class MBody(_Regex):
    code = "~b"
    syntax = "~b REGEX"
    help = "request or response body matches (bytes; . matches newlines)"
    flags = "s"
    binary = True
    sides: ClassVar[str] = "both"
    cost = 4

    def __call__(self, ex: Exchange) -> bool:
        return any(self._search(body) for body in _bodies_of(ex, self.sides))

    def sql(self) -> tuple[str, SqlParams]:
        return _bodies_sql("{col} REGEXP ?", self.sides, [self.pattern])


class MBodyRequest(MBody):
    code = "~bq"
    syntax = "~bq REGEX"
    help = "request body matches"
    sides = "request"


class MBodyResponse(MBody):
    code = "~bs"
    syntax = "~bs REGEX"
    help = "response body matches"
    sides = "response"


class MCode(Status):
    code = "~c"
    syntax = "~c CODE"
    help = "response status is CODE"


class MNoResponse(_Leaf):
    code = "~q"
    syntax = "~q"
    help = "request without a response (yet)"

    def __call__(self, ex: Exchange) -> bool:
        return ex.response is None

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.has_response = 0)", []


class MHasResponse(_Leaf):
    code = "~s"
    syntax = "~s"
    help = "has a response"

    def __call__(self, ex: Exchange) -> bool:
        return ex.response is not None

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.has_response = 1)", []


class MError(Error):
    code = "~e"
    syntax = "~e"
    help = "ended in an error"


class MWebSocket(WebSocket):
    code = "~websocket"
    syntax = "~websocket"
    help = "is a WebSocket session"


class MReplay(Replay):
    code = "~replay"
    syntax = "~replay"
    help = "is a replay"


class MAll(MatchAll):
    code = "~all"


# ---------------------------------------------------------------------------------------------
# Values: numbers, units, regexes

_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_DURATION_RE = re.compile(_NUMBER + r"\s*(ms|s|m)?", re.IGNORECASE)
_SIZE_RE = re.compile(_NUMBER + r"\s*(b|kb|mb|gb)?", re.IGNORECASE)
_STATUS_RE = re.compile(r"\d{1,4}")
_CLASS_RE = re.compile(r"([1-9])xx", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


def _status_number(text: str) -> float | None:
    return int(text) if _STATUS_RE.fullmatch(text) else None


def _duration_number(text: str) -> float | None:
    m = _DURATION_RE.fullmatch(text)
    if not m:
        return None
    return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "ms").lower()]


def _size_number(text: str) -> float | None:
    m = _SIZE_RE.fullmatch(text)
    if not m:
        return None
    return int(round(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]))


def _bounds(text: str, pos: int, number: Callable[[str], float | None], expects: str,
            classes: bool = False) -> list[Bound]:
    """Parse ``>=N``, ``N``, ``N-M`` (and ``4xx`` when ``classes``) into comparison bounds."""
    op = "="
    rest = text
    for candidate in (">=", "<=", "!=", ">", "<", "="):
        if text.startswith(candidate):
            op, rest = candidate, text[len(candidate):]
            break
    if op == "=" and rest == text:
        if classes and (m := _CLASS_RE.fullmatch(text)):
            low = int(m.group(1)) * 100
            return [(">=", low), ("<=", low + 99)]
        if "-" in text.strip("-"):
            lo_text, hi_text = text.split("-", 1)
            lo, hi = number(lo_text.strip()), number(hi_text.strip())
            if lo is not None and hi is not None:
                return [(">=", lo), ("<=", hi)]
    value = number(rest.strip())
    if value is None:
        raise FilterSyntaxError(expects, pos)
    return [(op, value)]


def _check_regex(pattern: str, flags: str, binary: bool, pos: int) -> None:
    inline = re.IGNORECASE * ("i" in flags) | re.MULTILINE * ("m" in flags) | re.DOTALL * ("s" in flags)
    try:
        re.compile(pattern.encode("utf-8") if binary else pattern, inline)
    except re.error as exc:
        raise FilterSyntaxError(f"bad regular expression: {exc.msg}", pos + (exc.pos or 0)) from exc


def _regex(cls: type[_Regex], pattern: str, pos: int) -> _Regex:
    if pattern == "":
        raise FilterSyntaxError(f"{cls.code} expects a regular expression", pos)
    _check_regex(pattern, cls.flags, cls.binary, pos)
    return cls(pattern)


# ---------------------------------------------------------------------------------------------
# Field and code tables (the parser and FILTER_HELP both read these)


def _needs_value(name: str, value: str, pos: int) -> str:
    if value == "":
        raise FilterSyntaxError(f"{name} expects a value after '{name}:'", pos)
    return value


def _build_path(value: str, pos: int) -> Filter:
    if value.startswith("~"):
        return _regex(PathRegex, value[1:], pos + 1)
    return Path(_needs_value("path", value, pos))


def _build_header(value: str, pos: int) -> Filter:
    name, sep, wanted = value.partition("=")
    _needs_value("header", name, pos)
    return Header(name, wanted if sep else None)


FieldBuilder = Callable[[str, int], Filter]

FIELDS: dict[str, tuple[type[Filter], FieldBuilder]] = {
    "method": (Method, lambda v, p: Method(_needs_value("method", v, p))),
    "path": (Path, _build_path),
    "status": (Status, lambda v, p: Status(_bounds(v, p, _status_number, "status expects a number or a class like 4xx", classes=True))),
    "host": (Host, lambda v, p: Host(_needs_value("host", v, p))),
    "tunnel": (Tunnel, lambda v, p: Tunnel(_needs_value("tunnel", v, p))),
    "header": (Header, _build_header),
    "body": (Body, lambda v, p: Body(_needs_value("body", v, p))),
    "req.body": (RequestBody, lambda v, p: RequestBody(_needs_value("req.body", v, p))),
    "res.body": (ResponseBody, lambda v, p: ResponseBody(_needs_value("res.body", v, p))),
    "dur": (Duration, lambda v, p: Duration(_bounds(v, p, _duration_number, "dur expects a duration like 500ms or 2s"))),
    "size": (Size, lambda v, p: Size(_bounds(v, p, _size_number, "size expects a size like 512, 10kb or 1mb"))),
    "error": (Error, lambda v, p: Error(_needs_value("error", v, p))),
    "url": (Url, lambda v, p: Url(v)),
}
"""``field:value`` names (lower case) -> (class, builder from the value text and its position)."""

FLAGS: dict[str, type[Filter]] = {"error": Error, "replay": Replay, "ws": WebSocket}
"""Bare words that are filters by themselves, not URL searches."""

_REGEX_CODES: list[type[_Regex]] = [
    MMethod, MUrl, MDomain, MHead, MHeadRequest, MHeadResponse,
    MContentType, MContentTypeRequest, MContentTypeResponse, MBody, MBodyRequest, MBodyResponse,
]
_FLAG_CODES: list[type[Filter]] = [MNoResponse, MHasResponse, MError, MWebSocket, MReplay, MAll]

CODES: dict[str, type[Filter]] = {
    **{c.code: c for c in _REGEX_CODES},
    MCode.code: MCode,
    **{c.code: c for c in _FLAG_CODES},  # type: ignore[attr-defined]
}
"""mitmproxy codes (``~m``) -> class."""

FILTER_HELP: list[tuple[str, str]] = (
    [(cls.syntax, cls.help) for cls, _ in FIELDS.values() if cls is not Url]
    + [(cls.syntax, cls.help) for name, cls in FLAGS.items() if name not in FIELDS]
    + [(Url.syntax, Url.help), ('"two words"', 'quotes keep spaces, parentheses and operators in a value (\\" escapes)')]
    + [(cls.syntax, cls.help) for cls in (And, Or, Not)]
    + [("( ... )", "grouping")]
    + [(cls.syntax, cls.help) for cls in CODES.values()]
    + [("& | ! ( )", "mitmproxy operators: and, or, not, grouping")]
)
"""``(syntax, help)`` for every filter, generated from the classes (help screens and docs)."""

# ---------------------------------------------------------------------------------------------
# Tokens and the parser


@dataclass
class _Token:
    kind: str
    """``( ) and or not code term``."""
    pos: int
    text: str = ""
    """The value with quotes removed (term) or the code (``~m``)."""
    bare: int = 0
    """How many leading characters of ``text`` were written without quotes."""
    offsets: tuple[int, ...] = ()
    """Where each character of ``text`` is in the expression (quotes make them differ)."""
    end: int = 0
    """Where the token ends in the expression."""

    def locate(self, index: int) -> int:
        """The position in the expression of ``text[index]`` (the token's end past the text)."""
        return self.offsets[index] if index < len(self.offsets) else self.end


_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")
_KEYWORDS = {"and", "or", "not"}


def _tokenize(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(expression)
    while i < n:
        c = expression[i]
        if c.isspace():
            i += 1
        elif c in "()":
            tokens.append(_Token(c, i))
            i += 1
        elif c in "&|":
            tokens.append(_Token("and" if c == "&" else "or", i, c))
            i += 1
        elif c in "!-":
            tokens.append(_Token("not", i, c))
            i += 1
        elif c == "~" and i + 1 < n and expression[i + 1].isalpha():
            j = i + 1
            while j < n and expression[j].isalpha():
                j += 1
            tokens.append(_Token("code", i, expression[i:j].lower()))
            i = j
        else:
            tok, i = _read_term(expression, i)
            if tok.bare == len(tok.text) and tok.text.lower() in _KEYWORDS:
                tok = _Token(tok.text.lower(), tok.pos, tok.text)
            tokens.append(tok)
    return tokens


def _read_term(expression: str, start: int) -> tuple[_Token, int]:
    """One word: unquoted runs and quoted runs glued together, ending at space or parenthesis."""
    parts: list[str] = []
    offsets: list[int] = []
    bare = 0
    quoted_seen = False
    i, n = start, len(expression)
    while i < n:
        c = expression[i]
        if c.isspace() or c in "()":
            break
        if c in "\"'":
            quote, j = c, i + 1
            while j < n and expression[j] != quote:
                if expression[j] == "\\" and j + 1 < n and expression[j + 1] in (quote, "\\"):
                    j += 1
                parts.append(expression[j])
                offsets.append(j)
                j += 1
            if j >= n:
                raise FilterSyntaxError(f"unclosed quote {quote}", i, expression)
            quoted_seen = True
            i = j + 1
        else:
            parts.append(c)
            offsets.append(i)
            if not quoted_seen:
                bare += 1
            i += 1
    return _Token("term", start, "".join(parts), bare, tuple(offsets), i), i


class _Parser:
    """Recursive descent: or < and (also juxtaposition) < not < ( ) and terms."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = _tokenize(expression)
        self.i = 0

    def error(self, message: str, pos: int) -> FilterSyntaxError:
        return FilterSyntaxError(message, pos, self.expression)

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def parse(self) -> Filter:
        if not self.tokens:
            return MatchAll()
        flt = self.parse_or()
        tok = self.peek()
        if tok is not None:  # only a ')' can stop parse_or early
            raise self.error("unbalanced ')': no '(' before it", tok.pos)
        return flt

    def parse_or(self) -> Filter:
        parts = [self.parse_and()]
        while (tok := self.peek()) is not None and tok.kind == "or":
            self.take()
            parts.append(self.parse_and(after=tok))
        return parts[0] if len(parts) == 1 else Or(parts)

    def parse_and(self, after: _Token | None = None) -> Filter:
        parts = [self.parse_not(after)]
        while (tok := self.peek()) is not None and tok.kind not in (")", "or"):
            if tok.kind == "and":
                self.take()
                parts.append(self.parse_not(after=tok))
            else:
                parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else And(parts)

    def parse_not(self, after: _Token | None = None) -> Filter:
        tok = self.peek()
        if tok is None or tok.kind in (")", "and", "or"):
            where = len(self.expression) if tok is None else tok.pos
            if after is not None:
                raise self.error(f"expected a filter after '{after.text or after.kind}'", where)
            if tok is not None and tok.kind == ")":
                raise self.error("unbalanced ')': no '(' before it", tok.pos)
            if tok is not None:
                raise self.error(f"'{tok.text}' needs a filter on its left", tok.pos)
            raise self.error("expected a filter", where)
        if tok.kind == "not":
            self.take()
            return Not(self.parse_not(after=tok))
        if tok.kind == "(":
            self.take()
            if (nxt := self.peek()) is not None and nxt.kind == ")":
                raise self.error("empty parentheses", tok.pos)
            if nxt is None:
                raise self.error("unbalanced '(': it is never closed", tok.pos)
            inner = self.parse_or()
            close = self.peek()
            if close is None or close.kind != ")":
                raise self.error("unbalanced '(': it is never closed", tok.pos)
            self.take()
            return inner
        if tok.kind == "code":
            return self.parse_code(self.take())
        return self.parse_term(self.take())

    def parse_code(self, tok: _Token) -> Filter:
        cls = CODES.get(tok.text)
        if cls is None:
            known = " ".join(sorted(CODES))
            raise self.error(f"unknown filter {tok.text}; known: {known}", tok.pos)
        if cls in _FLAG_CODES:
            return cls()
        arg = self.peek()
        if arg is None or arg.kind != "term":
            where = len(self.expression) if arg is None else arg.pos
            raise self.error(f"{tok.text} expects {'a status code' if cls is MCode else 'a regular expression'}", where)
        self.take()
        if cls is MCode:
            if not _STATUS_RE.fullmatch(arg.text):
                raise self.error("~c expects a status code number", arg.pos)
            return MCode([("=", int(arg.text))])
        try:
            return _regex(cls, arg.text, 0)  # type: ignore[arg-type]
        except FilterSyntaxError as exc:
            raise self.error(exc.message, arg.locate(exc.position)) from None

    def parse_term(self, tok: _Token) -> Filter:
        text = tok.text
        colon = text.find(":")
        m = _FIELD_NAME.match(text)
        is_field = (
            0 < colon < tok.bare
            and m is not None
            and m.end() == colon
            and not text.startswith("//", colon + 1)  # http://... is a URL, not a field
        )
        if not is_field:
            if tok.bare == len(text) and text.lower() in FLAGS:
                return FLAGS[text.lower()]()
            return Url(text)
        name = text[:colon].lower()
        entry = FIELDS.get(name)
        if entry is None:
            known = ", ".join(sorted(set(FIELDS) | set(FLAGS)))
            raise self.error(
                f"unknown field '{text[:colon]}' (known: {known}); "
                f"to search URLs for the text, quote it: \"{text}\"",
                tok.pos,
            )
        try:
            # Builders report positions within the value; map them back through any quotes.
            return entry[1](text[colon + 1:], 0)
        except FilterSyntaxError as exc:
            raise self.error(exc.message, tok.locate(colon + 1 + exc.position)) from None


def parse(expression: str) -> Filter:
    """Compile a filter expression (see docs/filters.md).

    Raises:
        FilterSyntaxError: with ``position`` (0-based) of the culprit and a message that says
            what was expected.
    """
    for pos, ch in enumerate(expression):
        if "\ud800" <= ch <= "\udfff":
            raise FilterSyntaxError("the filter contains a character that is not valid text", pos, expression)
    try:
        return _Parser(expression).parse()
    except FilterSyntaxError as exc:
        if not exc.expression:
            raise FilterSyntaxError(exc.message, exc.position, expression) from None
        raise


def compile_filter(flt: object) -> Filter:
    """A ``Filter`` from an expression string, a ``Filter`` or ``None`` (matches all)."""
    if flt is None:
        return MatchAll()
    if isinstance(flt, Filter):
        return flt
    if isinstance(flt, str):
        return parse(flt)
    raise TypeError(f"a filter must be an expression string or a Filter, not {type(flt).__name__}")
