"""Tokens and the recursive-descent parser of filter expressions."""

from __future__ import annotations

import re
from dataclasses import dataclass

from devtunnel.capture.filters.base import And, Filter, MatchAll, Not, Or, build_regex, excerpt
from devtunnel.capture.filters.codes import CODES, FLAG_CODES, MCode
from devtunnel.capture.filters.fields import FIELDS, FLAGS, STATUS_RE, Url
from devtunnel.errors import FilterSyntaxError


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

MAX_NESTING = 8
"""Parentheses and ``not`` nested in each other at most this deep. SQLite's parser gives up on
SQL nested a little deeper ("parser stack overflow" from 13 levels of ``(A or B (...``), and
deeper recursion here would end in a RecursionError: either would be a failure, not a message."""
MAX_TERMS = 256
"""Terms in one expression at most: SQLite refuses an expression about 1000 deep, which a long
chain of ``or`` reaches."""


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


def _quoted_regex_hint(expression: str, start: int) -> str:
    """What to write instead of a regular expression cut by a parenthesis at ``start``: the
    text up to the next space, quoted (``"(a+)+$"``)."""
    end = start
    while end < len(expression) and not expression[end].isspace():
        end += 1
    text = expression[start:end]
    quote = "'" if '"' in text and "'" not in text else '"'
    return f"a regular expression with parentheses goes in quotes: {quote}{excerpt(text)}{quote}"


class _Parser:
    """Recursive descent: or < and (also juxtaposition) < not < ( ) and terms."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = _tokenize(expression)
        self.i = 0
        self.depth = 0
        """Parentheses and ``not`` open around the token being parsed."""
        self.terms = 0

    def error(self, message: str, pos: int) -> FilterSyntaxError:
        """The error to raise; a message quotes the expression only through ``excerpt``."""
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
        if tok.kind in ("not", "("):
            self.take()
            self.depth += 1
            try:
                if self.depth > MAX_NESTING:
                    raise self.error(f"parentheses and 'not' nest more than {MAX_NESTING} deep", tok.pos)
                return Not(self.parse_not(after=tok)) if tok.kind == "not" else self.parse_group(tok)
            finally:
                self.depth -= 1
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise self.error(f"more than {MAX_TERMS} terms in one filter", tok.pos)
        if tok.kind == "code":
            return self.parse_code(self.take())
        return self.parse_term(self.take())

    def parse_group(self, tok: _Token) -> Filter:
        """What follows ``(`` (``tok``), up to and with its ``)``."""
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

    def parse_code(self, tok: _Token) -> Filter:
        cls = CODES.get(tok.text)
        if cls is None:
            known = " ".join(sorted(CODES))
            raise self.error(f"unknown filter {excerpt(tok.text)}; known: {known}", tok.pos)
        if cls in FLAG_CODES:
            return cls()
        arg = self.peek()
        if arg is None or arg.kind != "term":
            where = len(self.expression) if arg is None else arg.pos
            message = f"{tok.text} expects {'a status code' if cls is MCode else 'a regular expression'}"
            if arg is not None and arg.kind == "(" and cls is not MCode:
                message += "; " + _quoted_regex_hint(self.expression, arg.pos)
            raise self.error(message, where)
        self.take()
        if cls is not MCode and self.expression[arg.end:arg.end + 1] == "(":
            raise self.error(_quoted_regex_hint(self.expression, arg.pos), arg.end)
        if cls is MCode:
            if not STATUS_RE.fullmatch(arg.text):
                raise self.error("~c expects a status code number", arg.pos)
            return MCode([("=", int(arg.text))])
        try:
            return build_regex(cls, arg.text, 0)  # type: ignore[arg-type]
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
                f"unknown field '{excerpt(text[:colon])}' (known: {known}); "
                f"to search URLs for the text, quote it: \"{excerpt(text)}\"",
                tok.pos,
            )
        if text.startswith("~", colon + 1) and self.expression[tok.end:tok.end + 1] == "(":
            # path:~^/api/(v1|v2)/ would be path:~^/api/ and a group of URL words: say so instead.
            raise self.error(_quoted_regex_hint(self.expression, tok.locate(colon + 2)), tok.end)
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
