"""mitmproxy's flow filter codes (``~m``, ``~u``, ``~h`` ...), meaning what they mean there."""

from __future__ import annotations

from typing import ClassVar

from devtunnel.capture.filters.base import (
    URL_SQL,
    ColumnRegex,
    Filter,
    Leaf,
    MatchAll,
    RegexLeaf,
    SqlParams,
    bodies_of,
    bodies_sql,
    exchange_url,
    headers_match,
    headers_of,
    headers_sql,
)
from devtunnel.capture.filters.fields import Error, Replay, Status, WebSocket
from devtunnel.capture.model import Exchange


class MMethod(ColumnRegex):
    code = "~m"
    syntax = "~m REGEX"
    help = "method matches (case-insensitive)"
    flags = "i"
    column = "e.method"

    def _value(self, ex: Exchange) -> str | None:
        return ex.request.method


class MUrl(ColumnRegex):
    code = "~u"
    syntax = "~u REGEX"
    help = "URL matches (case-insensitive)"
    flags = "i"
    column = URL_SQL

    def _value(self, ex: Exchange) -> str | None:
        return exchange_url(ex)


class MDomain(ColumnRegex):
    code = "~d"
    syntax = "~d REGEX"
    help = "Host matches (case-insensitive)"
    flags = "i"
    column = "e.host"

    def _value(self, ex: Exchange) -> str | None:
        return ex.request.host


class _HeadRegex(RegexLeaf):
    op: ClassVar[str] = "re"
    sides: ClassVar[str] = "both"
    binary = True
    cost = 3

    def __call__(self, ex: Exchange) -> bool:
        return any(headers_match(h.fields, self.op, self.pattern, None) for h in headers_of(ex, self.sides))

    def sql(self) -> tuple[str, SqlParams]:
        return headers_sql(self.op, self.pattern, None, self.sides)


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


class MBody(RegexLeaf):
    code = "~b"
    syntax = "~b REGEX"
    help = "request or response body matches (bytes; . matches newlines)"
    flags = "s"
    binary = True
    sides: ClassVar[str] = "both"
    cost = 4

    def __call__(self, ex: Exchange) -> bool:
        return any(self._search(body) for body in bodies_of(ex, self.sides))

    def sql(self) -> tuple[str, SqlParams]:
        return bodies_sql("{col} REGEXP ?", self.sides, [self.pattern])


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


class MNoResponse(Leaf):
    code = "~q"
    syntax = "~q"
    help = "request without a response (yet)"

    def __call__(self, ex: Exchange) -> bool:
        return ex.response is None

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.has_response = 0)", []


class MHasResponse(Leaf):
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


REGEX_CODES: list[type[RegexLeaf]] = [
    MMethod, MUrl, MDomain, MHead, MHeadRequest, MHeadResponse,
    MContentType, MContentTypeRequest, MContentTypeResponse, MBody, MBodyRequest, MBodyResponse,
]
FLAG_CODES: list[type[Filter]] = [MNoResponse, MHasResponse, MError, MWebSocket, MReplay, MAll]

CODES: dict[str, type[Filter]] = {
    **{c.code: c for c in REGEX_CODES},
    MCode.code: MCode,
    **{c.code: c for c in FLAG_CODES},  # type: ignore[attr-defined]
}
"""mitmproxy codes (``~m``) -> class."""
