"""What a replay came to, in a few words: the status, whether the response changed, and why it failed.

``replay_outcome(original, replayed)`` is the one rule behind the line ``devtunnel replay``
prints and the notice the inspector shows. A response counts as the same when its status
line, its headers (in any order, less the volatile ones) and its body are the same.

Volatile headers change on every answer without saying anything about it; by default they
are ``VOLATILE_HEADERS``: the clock (Date, Age, Expires), timing (Server-Timing, X-Runtime,
X-Response-Time) and per-request ids and traces (X-Request-Id, Request-Id, X-Correlation-Id,
X-Trace-Id, Traceparent, Tracestate, X-Amzn-Trace-Id, X-Amzn-RequestId, CF-Ray). Callers add
their own names (``devtunnel replay --ignore-header NAME``).

Text taken from a response (the reason, the first line of an error body) comes from the
network: the caller escapes it for the terminal it writes to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser

from devtunnel.capture.diff import diff_bodies, diff_headers
from devtunnel.capture.model import Exchange, Response
from devtunnel.export.assemble import reason_of

__all__ = ["VOLATILE_HEADERS", "ReplayOutcome", "uncounted_headers", "body_excerpt", "error_excerpt", "replay_outcome", "status_line"]

VOLATILE_HEADERS: tuple[str, ...] = (
    "Date", "Age", "Expires", "Server-Timing", "X-Runtime", "X-Response-Time",
    "X-Request-Id", "Request-Id", "X-Correlation-Id", "X-Trace-Id", "Traceparent", "Tracestate",
    "X-Amzn-Trace-Id", "X-Amzn-RequestId", "CF-Ray",
)
"""Response headers left out when deciding whether a replay's response differs."""


def uncounted_headers(ignore_headers: Iterable[str] = ()) -> tuple[str, ...]:
    """The response headers a comparison shows but does not count as a difference: the volatile
    ones and the configured ``replay.ignore_headers``. The replay's verdict ("same response"),
    ``devtunnel diff`` and the inspector's diff all count with it."""
    return (*VOLATILE_HEADERS, *ignore_headers)

EXCERPT_LIMIT = 160
"""Characters of an error body's first line shown in a notice."""


@dataclass(frozen=True)
class ReplayOutcome:
    """A replay's result as a notice shows it."""

    status: str
    """``"404 Not Found"``, or ``"ERR local_refused"`` without a response."""
    verdict: str
    """``same response``, ``response differs``, ``original had no response`` or ``failed: why``."""
    differs: bool | None
    """Whether the response differs from the original's (None when there is nothing to compare)."""
    error_body: str
    """The first line of a 4xx or 5xx response's body (``""`` otherwise); raw network text."""

    @property
    def failed(self) -> bool:
        """True when the replay got no response."""
        return self.status.startswith("ERR")


def status_line(response: Response) -> str:
    """``"404 Not Found"``: the status with its reason (the standard one when none was sent),
    the reason read as UTF-8 (``Response.reason_text``: escape it for the terminal)."""
    return f"{response.status} {response.reason_text or reason_of(response)}".rstrip()


_HTML_READ = 64 * 1024
"""Characters of an HTML error page read for its excerpt, at most (a debug page can be large)."""


class _PageText(HTMLParser):
    """The title and the visible text of an HTML page, whitespace collapsed; no script or style."""

    _HIDDEN = frozenset({"script", "style", "head", "template", "noscript", "svg"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.text: list[str] = []
        self.size = 0
        self._hidden = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._HIDDEN:
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._HIDDEN and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        words = " ".join(data.split())
        if not words:
            return
        if self._in_title:
            self.title.append(words)
        elif not self._hidden:
            self.text.append(words)
            self.size += len(words) + 1


def _html_excerpt(text: str, limit: int) -> str:
    """``TITLE — first visible text`` of an HTML page (``Error response — Error code: 501 ...``)."""
    page = _PageText()
    for start in range(0, min(len(text), _HTML_READ), 4096):
        page.feed(text[start:start + 4096])
        if page.size > limit:
            break
    title = " ".join(page.title)
    words = " ".join(page.text)
    if title and words.startswith(title):  # the page repeats its title as its heading
        words = words[len(title):].lstrip()
    return " — ".join(part for part in (title, words) if part)


def error_excerpt(response: Response, limit: int = EXCERPT_LIMIT) -> str:
    """The first non-blank line of the body (JSON on one line; an HTML page's title and text),
    cut to ``limit`` characters."""
    return body_excerpt(response.body, response.content_type, limit, size=response.body_size)


def body_excerpt(body: bytes, content_type: str, limit: int = EXCERPT_LIMIT, *, size: int | None = None) -> str:
    """``error_excerpt`` of a body and its media type (lower-case, no parameters) that are not
    a captured ``Response`` (``devtunnel send``'s answer); ``size``: the whole body's, if cut."""
    if not body.strip():
        return ""
    if b"\x00" in body:
        return f"(binary body, {len(body) if size is None else size} bytes)"
    text = body.decode("utf-8", "replace")
    line = ""
    if "json" in content_type:
        try:
            line = json.dumps(json.loads(text), ensure_ascii=False, separators=(", ", ": "))
        except (ValueError, RecursionError):
            line = ""
    elif "html" in content_type:
        line = _html_excerpt(text, limit)
    if not line:
        line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _same_response(a: Response, b: Response, ignore_headers: Iterable[str]) -> bool:
    if (a.status, a.reason) != (b.status, b.reason):
        return False
    if not diff_headers(a.headers, b.headers, ignore=ignore_headers).identical:
        return False
    return diff_bodies(a.body, a.content_type, b.body, b.content_type).identical


def replay_outcome(original: Exchange, replayed: Exchange, *, ignore_headers: Iterable[str] = (),
                   volatile: bool = True) -> ReplayOutcome:
    """Summarise ``replayed`` against ``original``.

    Args:
        ignore_headers: more response header names to leave out of the comparison.
        volatile: also leave out ``VOLATILE_HEADERS``.
    """
    response = replayed.response
    if response is None:
        why = replayed.error_message or replayed.error or "no response"
        return ReplayOutcome(f"ERR {replayed.error or 'no response'}", f"failed: {why}", None, "")
    status = status_line(response)
    excerpt = error_excerpt(response) if response.status >= 400 else ""
    if original.response is None:
        return ReplayOutcome(status, "original had no response", None, excerpt)
    ignored = uncounted_headers(ignore_headers) if volatile else tuple(ignore_headers)
    same = _same_response(original.response, response, ignored)
    return ReplayOutcome(status, "same response" if same else "response differs", not same, excerpt)
