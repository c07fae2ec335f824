"""The ``field:value`` filters (``method:POST``, ``status:>=400`` ...) and their value syntax."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from typing import ClassVar, get_args

from devtunnel.capture.filters.base import (
    URL_SQL,
    ColumnRegex,
    Filter,
    Leaf,
    SqlParams,
    bodies_of,
    bodies_sql,
    build_regex,
    exchange_url,
    fold,
    headers_match,
    headers_of,
    sql_number,
    headers_sql,
)
from devtunnel.capture.filters.webhook import WEBHOOK_FIELDS, Duplicate
from devtunnel.capture.model import ErrorKind, Exchange
from devtunnel.errors import FilterSyntaxError
from devtunnel.values.sizes import size_bytes


class Method(Leaf):
    code = "method"
    syntax = "method:POST"
    help = "request method (case-insensitive)"

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, ex: Exchange) -> bool:
        return fold(ex.request.method) == fold(self.value)

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.method = ? COLLATE NOCASE)", [self.value]


class Path(Leaf):
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


class Host(Leaf):
    code = "host"
    syntax = "host:api.example"
    help = "Host header contains the value (case-insensitive)"

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, ex: Exchange) -> bool:
        return fold(self.value) in fold(ex.request.host)

    def sql(self) -> tuple[str, SqlParams]:
        return "(instr(lower(e.host), ?) > 0)", [fold(self.value)]


class Tunnel(Leaf):
    code = "tunnel"
    syntax = "tunnel:NAME"
    help = "recorded by the tunnel with this name (case-insensitive)"

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, ex: Exchange) -> bool:
        return fold(ex.tunnel) == fold(self.value)

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.tunnel = ? COLLATE NOCASE)", [self.value]


class Url(Leaf):
    code = "url"
    syntax = "WORD   url:WORD"
    help = "a bare word: the URL contains it (case-insensitive)"

    def __init__(self, value: str) -> None:
        self.value = value

    def __call__(self, ex: Exchange) -> bool:
        return fold(self.value) in fold(exchange_url(ex))

    def sql(self) -> tuple[str, SqlParams]:
        return f"(instr(lower({URL_SQL}), ?) > 0)", [fold(self.value)]


Bound = tuple[str, float]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class _Compare(Leaf):
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
        return "(" + " AND ".join(terms) + ")", [sql_number(n) for _, n in self.bounds]


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


class Held(_Compare):
    code = "held"
    syntax = "held   held:>1s  held:100ms-2s"
    help = "waited for the app devtunnel runs (--hold), or waits still; with a duration: waited this long (as dur:)"
    # Stored negative while the request still waits (``rows.held_column``): its wait so far.
    column = "abs(e.held)"

    def __init__(self, bounds: Sequence[Bound] = ()) -> None:
        super().__init__(bounds)

    def _value(self, ex: Exchange) -> float | None:
        return ex.held


class Size(_Compare):
    code = "size"
    syntax = "size:>1mb  size:<=512"
    help = "response body size (units k, kb, kib, m, mb, mib, g...; bytes when omitted)"
    column = "e.size"

    def _value(self, ex: Exchange) -> float | None:
        return ex.size


class Header(Leaf):
    code = "header"
    syntax = "header:NAME  header:NAME=VALUE"
    help = "request or response has the header (whose value contains VALUE, case-insensitive)"
    cost = 3

    def __init__(self, name: str, value: str | None = None) -> None:
        self.name = name
        self.value = value

    def __call__(self, ex: Exchange) -> bool:
        return any(headers_match(h.fields, "has", self.name, self.value) for h in headers_of(ex, "both"))

    def sql(self) -> tuple[str, SqlParams]:
        return headers_sql("has", self.name, self.value, "both")


class Body(Leaf):
    code = "body"
    syntax = "body:invoice.paid"
    help = "request or response body contains the text (exact bytes, case-sensitive)"
    sides: ClassVar[str] = "both"
    cost = 4

    def __init__(self, value: str) -> None:
        self.needle = value.encode("utf-8")

    def __call__(self, ex: Exchange) -> bool:
        return any(self.needle in body for body in bodies_of(ex, self.sides))

    def sql(self) -> tuple[str, SqlParams]:
        # Both sides are BLOBs, so instr() compares bytes (NUL bytes included).
        return bodies_sql("instr({col}, ?) > 0", self.sides, [self.needle])


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


class Error(Leaf):
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


class Replay(Leaf):
    code = "replay"
    syntax = "replay"
    help = "is a replay of another exchange"

    def __init__(self, of: str | None = None) -> None:
        self.of = of
        """Only replays of this exchange id (``show``'s list of them; no syntax writes it)."""

    def __call__(self, ex: Exchange) -> bool:
        return ex.replay_of is not None and (self.of is None or ex.replay_of == self.of)

    def sql(self) -> tuple[str, SqlParams]:
        if self.of is None:
            return "(e.replay_of IS NOT NULL)", []
        return "(e.replay_of IS NOT NULL AND e.replay_of = ?)", [self.of]


class WebSocket(Leaf):
    code = "ws"
    syntax = "ws"
    help = "is a WebSocket session"

    def __call__(self, ex: Exchange) -> bool:
        return bool(ex.websocket)

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.websocket = 1)", []


class PathRegex(ColumnRegex):
    code = "path:~"
    syntax = "path:~REGEX"
    help = "path matches the regex"
    column = "e.path"

    def _value(self, ex: Exchange) -> str | None:
        return ex.request.path


# --- values -----------------------------------------------------------------------------------

_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_DURATION_RE = re.compile(_NUMBER + r"\s*(ms|s|m)?", re.IGNORECASE)
STATUS_RE = re.compile(r"\d{1,4}")
_CLASS_RE = re.compile(r"([1-9])xx", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}


def _status_number(text: str) -> float | None:
    return int(text) if STATUS_RE.fullmatch(text) else None


def _duration_number(text: str) -> float | None:
    m = _DURATION_RE.fullmatch(text)
    if not m:
        return None
    return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "ms").lower()]


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


# --- the table the parser reads ---------------------------------------------------------------


def _needs_value(name: str, value: str, pos: int) -> str:
    if value == "":
        raise FilterSyntaxError(f"{name} expects a value after '{name}:'", pos)
    return value


_ERROR_KINDS = sorted(get_args(ErrorKind))


def _error_kind(value: str, pos: int) -> str:
    # A misspelt kind would match nothing without a word: say which kinds exist instead.
    kind = value.lower()
    if kind not in _ERROR_KINDS:
        raise FilterSyntaxError(f"error expects a kind: {', '.join(_ERROR_KINDS)}", pos)
    return kind


def _build_path(value: str, pos: int) -> Filter:
    if value.startswith("~"):
        return build_regex(PathRegex, value[1:], pos + 1)
    return Path(_needs_value("path", value, pos))


def _build_header(value: str, pos: int) -> Filter:
    name, sep, wanted = value.partition("=")
    _needs_value("header", name, pos)
    return Header(name, wanted if sep else None)


FieldBuilder = Callable[[str, int], Filter]

FIELDS: dict[str, tuple[type[Filter], FieldBuilder]] = {
    "method": (Method, lambda v, p: Method(_needs_value("method", v, p))),
    "path": (Path, _build_path),
    "status": (Status, lambda v, p: Status(
        _bounds(v, p, _status_number, "status expects a number or a class like 4xx", classes=True))),
    "host": (Host, lambda v, p: Host(_needs_value("host", v, p))),
    "tunnel": (Tunnel, lambda v, p: Tunnel(_needs_value("tunnel", v, p))),
    "header": (Header, _build_header),
    "body": (Body, lambda v, p: Body(_needs_value("body", v, p))),
    "req.body": (RequestBody, lambda v, p: RequestBody(_needs_value("req.body", v, p))),
    "res.body": (ResponseBody, lambda v, p: ResponseBody(_needs_value("res.body", v, p))),
    "dur": (Duration, lambda v, p: Duration(
        _bounds(v, p, _duration_number, "dur expects a duration like 500ms or 2s"))),
    "held": (Held, lambda v, p: Held(
        _bounds(v, p, _duration_number, "held expects a duration like 500ms or 2s"))),
    "size": (Size, lambda v, p: Size(_bounds(v, p, size_bytes, "size expects a size like 512, 10kb, 1mib or 1.5m"))),
    "error": (Error, lambda v, p: Error(_error_kind(v, p))),
    **WEBHOOK_FIELDS,
    "url": (Url, lambda v, p: Url(v)),
}
"""``field:value`` names (lower case) -> (class, builder from the value text and its position)."""

FLAGS: dict[str, type[Filter]] = {"error": Error, "replay": Replay, "ws": WebSocket, "dup": Duplicate, "held": Held}
"""Bare words that are filters by themselves, not URL searches."""


# --- rules at the edge (filters/edge.py) -------------------------------------------------------

from devtunnel.capture.filters.edge import Ip, RuleAny, RuleMark, build_ip  # noqa: E402


def _rule_value(value: str, pos: int) -> Filter:
    return RuleMark(_needs_value("rule", value, pos))


FIELDS["ip"] = (Ip, lambda v, p: build_ip(_needs_value("ip", v, p), p))

# --- when an exchange began (filters/when.py) ----------------------------------------------------

from devtunnel.capture.filters.when import Since, Until, build_since, build_until  # noqa: E402

FIELDS["since"] = (Since, build_since)
FIELDS["until"] = (Until, build_until)
FIELDS["rule"] = (RuleMark, _rule_value)
FLAGS["rule"] = RuleAny
