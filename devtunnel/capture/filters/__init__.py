"""The filter language: small classes that match an Exchange and compile to SQL.

Two spellings share one grammar and mean the same thing::

    method:POST path:/webhooks status:>=400        fields, juxtaposition is "and"
    ~m POST & ~u /hooks & !~c 200                  mitmproxy's flow filter codes

``parse(expression)`` returns a ``Filter``. A filter is callable on an Exchange and its
``sql()`` returns ``(where, params)`` over the store's tables (``exchange_rows e``, ``heads``,
``bodies``), so the store filters in SQLite, with the same answer as Python (see ``base``).
Captured data is never interpolated into SQL: every value is a bound parameter.

Modules: ``base`` (classes, combinators, functions SQL calls), ``fields`` (``method:`` ...),
``codes`` (``~m`` ...), ``parser``. The reference for people is docs/filters.md.
"""

from __future__ import annotations

from devtunnel.capture.filters.base import (
    And,
    Filter,
    MatchAll,
    Not,
    Or,
    REGEX_TIMEOUT,
    excerpt,
    headers_match,
    headers_text,
    leaves,
    regex_budget,
    regex_timeout,
    regexp,
    search_bounded,
)
from devtunnel.capture.filters.codes import CODES
from devtunnel.capture.filters.fields import FIELDS, FLAGS, Url
from devtunnel.capture.filters.parser import parse

__all__ = [
    "Filter",
    "MatchAll",
    "And",
    "Or",
    "Not",
    "parse",
    "compile_filter",
    "FILTER_HELP",
    "FIELDS",
    "FLAGS",
    "CODES",
    "regexp",
    "excerpt",
    "REGEX_TIMEOUT",
    "regex_budget",
    "regex_timeout",
    "search_bounded",
    "headers_match",
    "headers_text",
    "leaves",
]

FILTER_HELP: list[tuple[str, str]] = (
    [(cls.syntax, cls.help) for cls, _ in FIELDS.values() if cls is not Url]
    + [(cls.syntax, cls.help) for name, cls in FLAGS.items() if name not in FIELDS]
    + [(Url.syntax, Url.help)]
    + [('"two words"', 'quotes keep spaces, parentheses and operators in a value (\\" escapes)')]
    + [(cls.syntax, cls.help) for cls in (And, Or, Not)]
    + [("( ... )", "grouping")]
    + [(cls.syntax, cls.help) for cls in CODES.values()]
    + [("& | ! ( )", "mitmproxy operators: and, or, not, grouping")]
)
"""``(syntax, help)`` for every filter, generated from the classes (help screens and docs)."""


def compile_filter(flt: object) -> Filter:
    """A ``Filter`` from an expression string, a ``Filter`` or ``None`` (matches all)."""
    if flt is None:
        return MatchAll()
    if isinstance(flt, Filter):
        return flt
    if isinstance(flt, str):
        return parse(flt)
    raise TypeError(f"a filter must be an expression string or a Filter, not {type(flt).__name__}")
