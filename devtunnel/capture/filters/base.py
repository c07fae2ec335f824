"""The shared core of filters: the base classes, combinators, and the functions SQL calls.

Every leaf's SQL is never NULL (so ``NOT`` behaves like Python's ``not``), text folding is
ASCII-only on both sides (SQLite's ``lower()`` and ``NOCASE``), and regexes and header matching
call the very functions below, which the store registers on each connection (``REGEXP`` and
``dt_headers``): the Python answer and the SQL answer are the same by construction.

Every regex of a filter runs through ``search_bounded``, with a time bound: a pattern such as
``(a|a)+$`` backtracks for ever on ``aaaa...!``, and Python's ``re`` cannot be interrupted (nor
can SQLite interrupt a Python function mid-call), so a filter from the API, the inspector, the
command line or a rule at the edge could hold its thread, and with it the GIL, for minutes.
Patterns are checked with ``re`` (its syntax and messages stay the language's) and run with the
third-party ``regex`` module in its ``re``-compatible mode, which stops a search after
``REGEX_TIMEOUT`` seconds (``FilterTimeoutError``) and lets other threads run meanwhile. A
caller that runs many searches (a store query, the rules of one request) bounds their total
with ``regex_budget``.
"""

from __future__ import annotations

import functools
import re
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

import regex as _regex

from devtunnel.capture.model import Exchange, Headers
from devtunnel.errors import FilterSyntaxError, FilterTimeoutError
from devtunnel.values.terminal import quoted

SqlParams = list[object]

_SQLITE_INTEGERS = range(-(1 << 63), 1 << 63)


def sql_number(n: float) -> float:
    """``n`` as a parameter SQLite can bind: an integer past its 64 bits goes as a float, which
    SQLite compares by value as Python does (an int past the range would raise OverflowError)."""
    return float(n) if isinstance(n, int) and n not in _SQLITE_INTEGERS else n

QUOTE_LIMIT = 40
"""Characters of the expression a filter error quotes at most: a filter can be as long as the
user's paste (a 50 KB ``--filter``), and its error is one line of a terminal or of a JSON body."""


def excerpt(text: str, position: int = 0, limit: int = QUOTE_LIMIT) -> str:
    """At most ``limit`` characters of ``text``, around ``position``, with ``…`` where cut.

    The one rule for quoting a filter (or a piece of one) in an error: the parser's messages
    quote tokens with it and every command, screen and API answer that shows the expression
    does too, so the column in the message is what points into the whole expression.
    """
    if len(text) <= limit:
        return text
    start = max(0, min(position - limit // 2, len(text) - limit))
    end = start + limit
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


REGEX_TIMEOUT = 1.0
"""Seconds one search of a filter's regex may take on one value (a body of megabytes takes
milliseconds with any ordinary pattern)."""


@functools.lru_cache(maxsize=512)
def _text_regex(pattern: str) -> _regex.Pattern[str]:
    return _regex.compile(pattern, _regex.VERSION0)


@functools.lru_cache(maxsize=512)
def _bytes_regex(pattern: str) -> _regex.Pattern[bytes]:
    return _regex.compile(pattern.encode("utf-8"), _regex.VERSION0)


class _Budget(threading.local):
    until: float | None = None
    """``time.monotonic()`` past which the current ``regex_budget`` block runs no more regexes
    (None: not in one)."""
    timed_out: FilterTimeoutError | None = None
    """The time-out that stopped a search in the current block (SQLite keeps only its own message)."""


_budget = _Budget()


@contextmanager
def regex_budget(seconds: float) -> Iterator[None]:
    """Let the filter regexes run on this thread within the block for ``seconds`` from now.

    Each search still stops after ``REGEX_TIMEOUT``; a nested block ends no later than its
    outer one. A search past the end raises ``FilterTimeoutError``.
    """
    outer = _budget.until
    until = time.monotonic() + seconds
    _budget.until = until if outer is None else min(until, outer)
    _budget.timed_out = None
    try:
        yield
    finally:
        _budget.until = outer


def regex_timeout() -> FilterTimeoutError | None:
    """The ``FilterTimeoutError`` that stopped a search in the current ``regex_budget`` block, if
    any (once). For the store: SQLite reports a failed ``REGEXP`` only as "user-defined function
    raised exception"."""
    error, _budget.timed_out = _budget.timed_out, None
    return error


def _timed_out(rx: _regex.Pattern[str] | _regex.Pattern[bytes], budget: bool) -> FilterTimeoutError:
    pattern = rx.pattern if isinstance(rx.pattern, str) else rx.pattern.decode("utf-8", "replace")
    # As it came, cut: every output (the CLI's error line, the API's JSON, the inspector) escapes
    # the whole message once.
    shown = quoted(excerpt(pattern))
    if budget:
        why = "this filter's regexes ran longer in all than one search of the captures may take"
    else:
        why = f"it ran more than {REGEX_TIMEOUT:g} s on one value"
    error = FilterTimeoutError(
        f"filter regex took too long: {shown} ({why}); simplify it (a nested repeat such as (a+)+ or (a|a)+"
        " can take exponential time) or narrow the filter with other terms",
        pattern,
    )
    _budget.timed_out = error
    return error


def search_bounded(rx: _regex.Pattern[str] | _regex.Pattern[bytes], value: str | bytes) -> bool:
    """Whether ``rx`` is found in ``value``, in at most ``REGEX_TIMEOUT`` seconds (and within the
    current ``regex_budget``); the one place a filter's regex runs.

    Raises:
        FilterTimeoutError: the search took too long and was stopped.
    """
    until = _budget.until
    timeout = REGEX_TIMEOUT
    if until is not None:
        timeout = min(timeout, until - time.monotonic())
        if timeout <= 0:
            raise _timed_out(rx, budget=True)
    try:
        # Positional, as keywords cost regex twice the time of a short search. concurrent=True:
        # the GIL is released while it searches (str and bytes cannot change meanwhile), so the
        # event loop and the other threads go on.
        found = rx.search(value, None, None, True, False, timeout)  # type: ignore[arg-type]
    except TimeoutError:
        raise _timed_out(rx, budget=timeout < REGEX_TIMEOUT) from None
    return found is not None


def regexp(pattern: str, value: object) -> int:
    """SQLite's ``value REGEXP pattern``: 1 when the regex is found in value (text or bytes).

    NULL never matches. Flags travel inside the pattern (``(?i)``), so one cached compile serves
    both the Python filter and SQL.

    Raises:
        FilterTimeoutError: the search took too long (``search_bounded``).
    """
    if isinstance(value, str):
        return 1 if search_bounded(_text_regex(pattern), value) else 0
    if isinstance(value, bytes):
        return 1 if search_bounded(_bytes_regex(pattern), value) else 0
    return 0


def headers_text(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Header fields as ``name: value`` lines joined by CRLF (what ``~h`` regexes see)."""
    return b"\r\n".join(n + b": " + v for n, v in fields)


def headers_match(fields: Sequence[tuple[bytes, bytes]], op: str, a: str, b: str | None) -> bool:
    """The header predicates of the language, over raw ``(name, value)`` pairs.

    Args:
        fields: the header fields.
        op: ``"has"`` (a field named ``a``; with ``b``, whose value contains ``b``; both
            ignoring ASCII case), ``"re"`` (regex ``a`` found in the ``name: value`` lines) or
            ``"ctype"`` (regex ``a`` found in a Content-Type value).
        a: header name or regex pattern.
        b: value substring for ``"has"``.
    """
    if op == "has":
        name = a.encode("utf-8").lower()
        wanted = None if b is None else b.encode("utf-8").lower()
        return any(n.lower() == name and (wanted is None or wanted in v.lower()) for n, v in fields)
    if op == "re":
        return search_bounded(_bytes_regex(a), headers_text(fields))
    if op == "ctype":
        rx = _bytes_regex(a)
        return any(n.lower() == b"content-type" and search_bounded(rx, v) for n, v in fields)
    raise ValueError(f"unknown header predicate {op!r}")


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(text: str) -> str:
    """ASCII-only lower case: exactly what SQLite's ``lower()`` and ``NOCASE`` do."""
    return text.translate(_ASCII_LOWER)


def exchange_url(ex: Exchange) -> str:
    """The URL bare words and ``~u`` search (``URL_SQL`` is the same in SQL)."""
    return ex.url


URL_SQL = "(e.scheme || '://' || e.host || e.target_text)"

# ---------------------------------------------------------------------------------------------


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
        """A WHERE clause over ``exchange_rows e`` (never NULL) and its parameters."""
        raise NotImplementedError


def leaves(flt: Filter) -> list[Filter]:
    """``flt`` and every filter inside it (the parts of ``and`` and ``or``, what ``not`` negates)."""
    out, todo = [], [flt]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, (And, Or)):
            todo.extend(node.parts)
        elif isinstance(node, Not):
            todo.append(node.inner)
    return out


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


class Leaf(Filter):
    """A filter with one value, built by ``build(value, position)`` from the parsed text."""

    code: ClassVar[str] = ""
    """The field name (``method``) or mitmproxy code (``~m``)."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Each leaf describes itself once, in ``syntax`` and ``help``; help() shows the same.
        if "__doc__" not in cls.__dict__ or cls.__doc__ is None:
            cls.__doc__ = f"``{cls.syntax}``: {cls.help}."

    def __repr__(self) -> str:
        return f"{type(self).__name__}({vars(self)!r})"


def headers_sql(op: str, a: str, b: str | None, sides: str) -> tuple[str, SqlParams]:
    cols = {"both": ("h.req", "h.res"), "request": ("h.req",), "response": ("h.res",)}[sides]
    test = " OR ".join(f"dt_headers({c}, ?, ?, ?)" for c in cols)
    return (
        f"EXISTS (SELECT 1 FROM heads h WHERE h.id = e.id AND ({test}))",
        [x for _ in cols for x in (op, a, b)],
    )


def headers_of(ex: Exchange, sides: str) -> list[Headers]:
    out: list[Headers] = []
    if sides in ("both", "request"):
        out.append(ex.request.headers)
    if sides in ("both", "response") and ex.response is not None:
        out.append(ex.response.headers)
    return out


def bodies_sql(test: str, sides: str, params: SqlParams) -> tuple[str, SqlParams]:
    cols = {"both": ("b.req", "b.res"), "request": ("b.req",), "response": ("b.res",)}[sides]
    clause = " OR ".join(test.format(col=c) for c in cols)
    return (
        f"EXISTS (SELECT 1 FROM bodies b WHERE b.id = e.id AND ({clause}))",
        [p for _ in cols for p in params],
    )


def bodies_of(ex: Exchange, sides: str) -> list[bytes]:
    out: list[bytes] = []
    if sides in ("both", "request"):
        out.append(ex.request.body)
    if sides in ("both", "response") and ex.response is not None:
        out.append(ex.response.body)
    return out



class RegexLeaf(Leaf):
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


class ColumnRegex(RegexLeaf):
    column: ClassVar[str] = ""

    def _value(self, ex: Exchange) -> str | None:
        raise NotImplementedError

    def __call__(self, ex: Exchange) -> bool:
        value = self._value(ex)
        return value is not None and self._search(value)

    def sql(self) -> tuple[str, SqlParams]:
        return f"({self.column} REGEXP ?)", [self.pattern]


def _check_regex(pattern: str, flags: str, binary: bool, pos: int) -> None:
    # Python's re says what the language accepts, in its words; the regex module, which runs
    # the search, must take the pattern too (it accepts all but a few of re's).
    inline = re.IGNORECASE * ("i" in flags) | re.MULTILINE * ("m" in flags) | re.DOTALL * ("s" in flags)
    try:
        with warnings.catch_warnings():
            # re warns of forms a later Python may read otherwise ([[:alpha:]], [a&&b]); the
            # regex module, which runs the search, defines them (docs/filters.md), and the
            # warning would print a line of this file over the user's terminal.
            warnings.simplefilter("ignore", FutureWarning)
            re.compile(pattern.encode("utf-8") if binary else pattern, inline)
    except re.error as exc:
        raise FilterSyntaxError(f"bad regular expression: {exc.msg}", pos + (exc.pos or 0)) from exc
    full = (f"(?{flags})" if flags else "") + pattern
    try:
        _bytes_regex(full) if binary else _text_regex(full)
    except _regex.error as exc:
        raise FilterSyntaxError(f"bad regular expression: {getattr(exc, 'msg', exc)}", pos) from exc


def build_regex(cls: type[RegexLeaf], pattern: str, pos: int) -> RegexLeaf:
    if pattern == "":
        raise FilterSyntaxError(f"{cls.code} expects a regular expression", pos)
    _check_regex(pattern, cls.flags, cls.binary, pos)
    return cls(pattern)
