"""Export exchanges as one HAR 1.2 log (http://www.softwareishard.com/blog/har-12-spec/).

Bodies that are UTF-8 text are given as text; anything else is base64 with
``"encoding": "base64"`` (``"_encoding"`` on ``postData``, where the spec has no such field and
custom fields must start with ``_``). Response bodies compressed with gzip or deflate are
decompressed first, as the spec asks; other codings are kept as captured and say so in a
comment. Truncated bodies carry a comment. An entry's URL is the public one unless asked
otherwise, and its request headers are those of a request to that URL: without what the relay
added on the way in (``export.base.sent_fields``). An exchange that ended in an error without a
response gets a response with status 0 (as browsers write failed requests) and the error in
``_error`` and ``comment``. WebSocket messages go in ``_webSocketMessages``, and the entry says
``"_resourceType": "websocket"`` as Chrome's do.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

from devtunnel import __version__
from devtunnel.capture.bodies import DECODE_LIMIT, decode_content
from devtunnel.capture.model import Exchange, Headers, Request, Response, WsMessage, wire_bytes
from devtunnel.export.base import PUBLIC_SCHEMES, Destination, Export, destination, prepared, require_exchanges, sent_fields, truncation_note
from devtunnel.export.redact import redact_exchange
from devtunnel.values.sizes import format_size
from devtunnel.values.terminal import read_utf8_json

__all__ = ["export_har", "har_log", "har_pieces", "har_text"]

_JSON = dict[str, Any]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds")


def _headers(headers: Headers) -> list[_JSON]:
    # ``Headers.items``, as the agent API's ``as_multidict``: one reading of a header for JSON.
    # A value that is not UTF-8 reads with U+FFFD there; its bytes go in ``_valueBase64``.
    out: list[_JSON] = []
    for (name, value), (_, raw) in zip(headers.items(), headers.fields):
        header: _JSON = {"name": name, "value": value}
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            header["_valueBase64"] = base64.b64encode(raw).decode("ascii")
            header["comment"] = "the value is not UTF-8: its bytes are in _valueBase64"
        out.append(header)
    return out


def _head_size(start_line: bytes, headers: Headers) -> int:
    """Bytes of the head as it was on the wire: start line, fields, blank line (HAR's ``headersSize``)."""
    size = len(start_line) + 2
    size += sum(len(name) + 2 + len(value) + 2 for name, value in headers.fields)
    return size + 2


def _request_cookies(headers: Headers) -> list[_JSON]:
    cookies: list[_JSON] = []
    for header in headers.get_all("cookie"):
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name:
                cookies.append({"name": name, "value": value})
    return cookies


def _response_cookies(headers: Headers) -> list[_JSON]:
    cookies: list[_JSON] = []
    for header in headers.get_all("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue  # a malformed Set-Cookie stays visible in the headers list
        for name, morsel in jar.items():
            cookie: _JSON = {"name": name, "value": morsel.value}
            if morsel["path"]:
                cookie["path"] = morsel["path"]
            if morsel["domain"]:
                cookie["domain"] = morsel["domain"]
            if morsel["expires"]:
                cookie["expires"] = morsel["expires"]
            cookie["httpOnly"] = bool(morsel["httponly"])
            cookie["secure"] = bool(morsel["secure"])
            cookies.append(cookie)
    return cookies


def _truncation(body: bytes, size: int, truncated: bool) -> str:
    return truncation_note(body, size) if truncated else ""


def _post_data(request: Request) -> _JSON | None:
    if not request.body and request.body_size == 0:
        return None
    mime = request.headers.get("content-type") or "application/octet-stream"
    data: _JSON = {"mimeType": mime}
    try:
        data["text"] = request.body.decode("utf-8")
    except UnicodeDecodeError:
        data["text"] = base64.b64encode(request.body).decode("ascii")
        data["_encoding"] = "base64"
    comment = _truncation(request.body, request.body_size, request.body_truncated)
    if comment:
        data["comment"] = comment
    return data


def _decoded(response: Response) -> tuple[bytes, str]:
    """The response body without its Content-Encoding, and a comment when that was not possible."""
    coding = (response.headers.get("content-encoding") or "").strip().lower()
    if not coding or coding == "identity" or not response.body:
        return response.body, ""
    if response.body_truncated:
        return response.body, f"{coding} body kept as captured (truncated, cannot be decoded)"
    decoded = decode_content(response.body, coding)
    if decoded is None:
        if coding in ("gzip", "x-gzip", "deflate"):
            return response.body, f"{coding} body kept as captured (it does not decode)"
        return response.body, f"{coding} body kept as captured (not decoded)"
    plain, cut = decoded
    if cut:  # a few KiB of gzip can inflate to gigabytes: not held in memory to be written out
        return response.body, f"{coding} body kept as captured (it decodes to more than {format_size(DECODE_LIMIT)})"
    return plain, ""


def _content(response: Response) -> _JSON:
    body, note = _decoded(response)
    content: _JSON = {
        "size": len(body) if body is not response.body else response.body_size,
        "mimeType": response.headers.get("content-type") or "",
    }
    if body is not response.body:
        content["compression"] = len(body) - len(response.body)
    try:
        content["text"] = body.decode("utf-8")
    except UnicodeDecodeError:
        content["text"] = base64.b64encode(body).decode("ascii")
        content["encoding"] = "base64"
    comments = [c for c in (note, _truncation(response.body, response.body_size, response.body_truncated)) if c]
    if comments:
        content["comment"] = "; ".join(comments)
    return content


def _absolute_url(exchange: Exchange, base_url: str | None, local: bool) -> tuple[str, Destination | None]:
    """The request's absolute URL (HAR requires one): ``base_url`` or the local service when
    asked, else the public Host, else the local target; and where that is (None: the local
    target, no Host to say the public URL)."""
    request = exchange.request
    if base_url is not None or local:
        where = destination(exchange, base_url=base_url, local=local)
        return where.url(request.url_text), where
    # A target that is not a path (`OPTIONS *`) goes after a `/`, as Destination.url puts it:
    # `http://host:8080*` would not be a URL at all.
    target = request.url_text if request.url_text.startswith("/") else "/" + request.url_text
    scheme = exchange.scheme if exchange.scheme in PUBLIC_SCHEMES else ""
    if request.host and scheme:
        return f"{scheme}://{request.host}{target}", Destination(scheme, request.host, public=True)
    base = exchange.target_url.rstrip("/") or f"{scheme or 'http'}://localhost"
    return base + target, None


def _request(exchange: Exchange, base_url: str | None, local: bool) -> _JSON:
    request = exchange.request
    url, where = _absolute_url(exchange, base_url, local)
    # The headers of a request to that URL: to the public one, without what the relay added.
    headers = Headers.of_pairs(tuple(sent_fields(exchange, where)))
    version = f"HTTP/{request.http_version}"
    query = read_utf8_json(request.query)
    entry: _JSON = {
        "method": request.method,
        "url": url,
        "httpVersion": version,
        "cookies": _request_cookies(headers),
        "headers": _headers(headers),
        "queryString": [{"name": n, "value": v} for n, v in parse_qsl(query, keep_blank_values=True)],
        "headersSize": _head_size(wire_bytes(request.method) + b" " + request.target + b" " + version.encode(), headers),
        "bodySize": request.body_size,
    }
    post = _post_data(request)
    if post is not None:
        entry["postData"] = post
    return entry


def _response(exchange: Exchange) -> _JSON:
    response = exchange.response
    if response is None:
        # Browsers write a failed request as status 0 with empty fields; readers expect that.
        failed: _JSON = {
            "status": 0,
            "statusText": "",
            "httpVersion": "",
            "cookies": [],
            "headers": [],
            "content": {"size": 0, "mimeType": "x-unknown", "text": ""},  # (HAR readers read text)
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
        }
        if exchange.error:
            failed["_error"] = exchange.error
            failed["comment"] = exchange.error_message or exchange.error
        return failed
    version = f"HTTP/{response.http_version}"
    headers = response.headers
    return {
        "status": response.status,
        "statusText": response.reason_json,
        "httpVersion": version,
        "cookies": _response_cookies(headers),
        "headers": _headers(headers),
        "content": _content(response),
        "redirectURL": response.headers.get("location") or "",
        "headersSize": _head_size(f"{version} {response.status} ".encode() + wire_bytes(response.reason), headers),
        "bodySize": response.body_size,
    }


def _timings(exchange: Exchange) -> _JSON:
    duration = max(exchange.duration or 0.0, 0.0) * 1000
    wait = duration if exchange.ttfb is None else min(max(exchange.ttfb * 1000, 0.0), duration)
    return {"send": 0.0, "wait": round(wait, 3), "receive": round(duration - wait, 3)}


def _entry(exchange: Exchange, base_url: str | None, local: bool) -> _JSON:
    timings = _timings(exchange)
    entry: _JSON = {
        "startedDateTime": _iso(exchange.started_at),
        "time": round(timings["send"] + timings["wait"] + timings["receive"], 3),
        "request": _request(exchange, base_url, local),
        "response": _response(exchange),
        "cache": {},
        "timings": timings,
        "_id": exchange.id,
        "_tunnel": exchange.tunnel,
    }
    if exchange.remote_addr:
        entry["_remoteAddress"] = exchange.remote_addr
    if exchange.replay_of:
        entry["_replayOf"] = exchange.replay_of
    if exchange.error:
        entry["comment"] = f"{exchange.error}: {exchange.error_message}" if exchange.error_message else exchange.error
    if exchange.websocket:
        # As Chrome writes a WebSocket's entry: its importer (and tools that read its HARs)
        # take an entry for a WebSocket, with a Messages tab, by its _resourceType.
        entry["_resourceType"] = "websocket"
        entry["_webSocketMessages"] = [_ws_message(m) for m in exchange.ws_messages]
    return entry


def _ws_message(m: WsMessage) -> _JSON:
    """One message as Chrome's ``_webSocketMessages`` has it; one recorded only in part (past
    the body cap) has its real size in ``_size``: ``data`` holds what was recorded."""
    out: _JSON = {
        "type": "send" if m.sender == "client" else "receive",
        "time": m.time,
        "opcode": m.opcode,
        "data": read_utf8_json(m.payload) if m.opcode == 1 else base64.b64encode(m.payload).decode(),
    }
    if m.size > len(m.payload):
        out["_size"] = m.size
    return out


def har_log(
    exchanges: Sequence[Exchange], *, redact: bool = False, base_url: str | None = None, local: bool = False
) -> _JSON:
    """The HAR document (``{"log": ...}``) as a JSON-ready dict, entries oldest first."""
    return _document([_entry(ex, base_url, local) for ex in _ordered(exchanges, redact=redact)])


def _ordered(exchanges: Sequence[Exchange], *, redact: bool) -> list[Exchange]:
    # A stable sort: exchanges that started together stay in the order given (an id's).
    return sorted(prepared(exchanges, redact=redact), key=lambda ex: ex.started_at)


def _document(entries: list[Any]) -> _JSON:
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "devtunnel", "version": __version__},
            "pages": [],
            "entries": entries,
        }
    }


_MARKS = ("\ue000first", "\ue000second")  # in the frame only, whose other text is fixed


def har_text(
    exchanges: Iterable[Exchange],
    *,
    redact: bool = False,
    base_url: str | None = None,
    local: bool = False,
    indent: int | None = 2,
) -> Iterator[str]:
    """The text of :func:`export_har`, a piece at a time: the exchanges (already in start-time
    order) are read, made entries and written one at a time, so a log of a million is never in
    memory. The bytes are ``json.dumps`` of the whole log's: the log's text is dumped around two
    marks, which give what comes before the entries, between two and after them.

    Raises:
        ExportError: no exchanges (before anything is given), or an exchange the format cannot
            express (after the entries before it).
    """
    # ensure_ascii: captured text may hold terminal control sequences; escaped, they are inert.
    frame = json.dumps(_document(list(_MARKS)), indent=indent, ensure_ascii=True)
    first, second = (json.dumps(mark, ensure_ascii=True) for mark in _MARKS)
    before, rest = frame.split(first)
    between, after = rest.split(second)
    inner = "\n" + before.rpartition("\n")[2] if indent is not None else "\n"  # an entry's line start
    items = iter(exchanges)
    head = next(items, None)
    require_exchanges([head] if head is not None else [])
    opening = before
    for exchange in itertools.chain([head], items) if head is not None else ():
        ex = redact_exchange(exchange) if redact else exchange
        # JSON strings hold no newline: indenting every line of an entry is what indent does.
        yield opening + json.dumps(_entry(ex, base_url, local), indent=indent, ensure_ascii=True).replace("\n", inner)
        opening = between
    yield after + "\n"


def har_pieces(
    exchanges: Iterable[Exchange],
    *,
    redact: bool = False,
    base_url: str | None = None,
    local: bool = False,
    indent: int | None = 2,
) -> Iterator[Export]:
    """:func:`har_text` as the pieces every format gives (HAR has no side files): the exchanges
    already in start-time order."""
    return (Export(text) for text in har_text(exchanges, redact=redact, base_url=base_url, local=local, indent=indent))


def export_har(
    exchanges: Sequence[Exchange],
    *,
    redact: bool = False,
    base_url: str | None = None,
    local: bool = False,
    indent: int | None = 2,
) -> Export:
    """All exchanges in one HAR 1.2 log.

    Args:
        exchanges: the exchanges; entries are sorted by start time, as the spec prefers.
        redact: replace credentials, signatures and secret fields (and cookie values) with ``<redacted>``.
        base_url: give each request's URL on this ``scheme://host[:port][/prefix]`` instead of the public URL.
        local: give each request's URL on the local service it was forwarded to.
        indent: JSON indentation (None for one line).
    """
    ordered = _ordered(exchanges, redact=redact)
    return Export("".join(har_text(ordered, base_url=base_url, local=local, indent=indent)))
