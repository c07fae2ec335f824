"""Compare two exchanges: request with request, response with response.

Each part becomes a ``SectionDiff`` of tagged lines. Headers compare with case-insensitive names
and, by default, in any order. Bodies compare by what they are: JSON as data (keys sorted,
pretty printed), form bodies field by field, text line by line, anything else by size and
SHA-256 with the first differing offset. ``ignore`` names leave fields out of the comparison:
``id``, ``created``, ``data.object.id``, ``items[0].id``, ``items[*].price`` for JSON; a plain
name also drops a form field or a header. ``volatile`` names response headers that are shown
when they differ but do not make the exchanges differ (a ``Date`` a second later): a section
whose only changes are theirs stays ``identical`` and says so in a note.

Lines go through the terminal rule (``values.terminal.escape``): no raw control, bidi or other
hidden character (they become ``\\x1b``, ``\\n``, ``\\u202e``), so a hostile body cannot drive
the terminal that shows the diff, and the API's JSON of the lines always encodes.
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Literal
from urllib.parse import parse_qsl

from devtunnel.capture.model import Exchange, Headers, Request, Response
from devtunnel.values.media import is_form, media_type
from devtunnel.values.terminal import escape, read_utf8

__all__ = [
    "DiffLine",
    "SectionDiff",
    "ExchangeDiff",
    "diff_exchanges",
    "diff_bodies",
    "diff_headers",
    "render_unified",
    "render_side_by_side",
]

Tag = Literal[" ", "-", "+", "?"]
Kind = Literal["headers", "json", "form", "text", "binary"]
Side = Literal["both", "request", "response"]

MAX_ALIGNED_LINES = 2_000
"""Changed regions longer than this (after the common head and tail are set aside) are not
given to difflib, whose alignment is quadratic: they are cut at the lines found once on each
side (``_anchored``), and a part still longer with no such line is shown as one removed block
and one added block."""

MAX_ANCHOR_DEPTH = 64
"""How many times a region is cut at its unique lines before it is shown as two blocks."""


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a diff: ``tag`` is ``" "`` same, ``"-"`` only in a, ``"+"`` only in b, ``"?"`` a note."""

    tag: Tag
    text: str


@dataclass
class SectionDiff:
    """The comparison of one part (request headers, response body ...)."""

    title: str
    kind: Kind
    lines: list[DiffLine] = field(default_factory=list)
    identical: bool = True
    size_a: int | None = None
    """Binary bodies: sizes, SHA-256 hex digests and the first offset where they differ."""
    size_b: int | None = None
    sha_a: str | None = None
    sha_b: str | None = None
    first_difference: int | None = None


@dataclass
class ExchangeDiff:
    """Every section of the comparison of exchange ``a_id`` with ``b_id``."""

    a_id: str
    b_id: str
    sections: list[SectionDiff]

    @property
    def identical(self) -> bool:
        """True when no section differs."""
        return all(s.identical for s in self.sections)


# --- ignore paths -----------------------------------------------------------------------------

_SEGMENT = re.compile(r"\[(\d+|\*)\]|([^.\[\]]+)")


def _segments(path: str) -> list[str | int]:
    """``data.items[0].id`` -> ``["data", "items", 0, "id"]`` (``*`` stays a wildcard)."""
    out: list[str | int] = []
    for m in _SEGMENT.finditer(path):
        index, key = m.groups()
        if index is not None:
            out.append("*" if index == "*" else int(index))
        else:
            out.append(key)
    return out


def _drop(value: object, path: Sequence[str | int]) -> object:
    """A copy of ``value`` without what ``path`` points at (missing paths change nothing)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        if head == "*":
            keys = list(value)
        elif isinstance(head, str) and head in value:
            keys = [head]
        else:
            return value
        out = dict(value)
        for k in keys:
            if rest:
                out[k] = _drop(out[k], rest)
            else:
                del out[k]
        return out
    if isinstance(value, list):
        if head == "*":
            indexes = list(range(len(value)))
        elif isinstance(head, int) and 0 <= head < len(value):
            indexes = [head]
        else:
            return value
        if rest:
            items = list(value)
            for i in indexes:
                items[i] = _drop(items[i], rest)
            return items
        return [v for i, v in enumerate(value) if i not in indexes]
    return value


# --- lines ------------------------------------------------------------------------------------

def _safe(text: str) -> str:
    """``text`` through the terminal rule (``values.terminal.escape``): controls, bidi and other
    hidden characters, bytes that were not UTF-8, as visible escapes; a line break in a form value
    cannot start a line. Tabs stay, and backslashes stay single, as in a body (a JSON ``\\"``
    reads as JSON): the screen and the command line show the lines through the same rule."""
    return escape(text, keep="\t", double_backslash=False)


def _line_diff(a: Sequence[str], b: Sequence[str], keys_a: Sequence[str] | None = None,
               keys_b: Sequence[str] | None = None) -> list[DiffLine]:
    """Tagged lines; ``keys`` (when given) are what is compared, ``a``/``b`` what is shown."""
    ka = list(keys_a if keys_a is not None else a)
    kb = list(keys_b if keys_b is not None else b)
    # The common head and tail cost nothing to find and are most of a typical diff (one field
    # of a big JSON document changed), so only the middle goes through difflib.
    shortest = min(len(ka), len(kb))
    head = 0
    while head < shortest and ka[head] == kb[head]:
        head += 1
    tail = 0
    while tail < shortest - head and ka[len(ka) - 1 - tail] == kb[len(kb) - 1 - tail]:
        tail += 1
    end_a, end_b = len(ka) - tail, len(kb) - tail
    out = [DiffLine(" ", a[i]) for i in range(head)]
    for same, i1, i2, j1, j2 in _anchored(ka[head:end_a], kb[head:end_b]):
        if same:
            out += [DiffLine(" ", a[head + i]) for i in range(i1, i2)]
        else:
            out += [DiffLine("-", a[head + i]) for i in range(i1, i2)]
            out += [DiffLine("+", b[head + j]) for j in range(j1, j2)]
    out += [DiffLine(" ", a[i]) for i in range(end_a, len(ka))]
    return out


def _anchored(ka: Sequence[str], kb: Sequence[str], depth: int = 0) -> list[tuple[bool, int, int, int, int]]:
    """The regions of ``ka`` and ``kb`` that are the same or differ, in order: ``(same, i1, i2,
    j1, j2)``.

    A short pair goes to difflib. A long one (a JSON document of 20,000 items changed at items
    777 and 15,000) is first cut at the lines found exactly once on each side, in the order
    both keep (patience diff's anchors: ``"id": 778`` is such a line), and each part between
    them is aligned the same way; difflib never sees more than ``MAX_ALIGNED_LINES`` a side,
    and two changes far apart no longer make one block of everything between them.
    """
    n, m = len(ka), len(kb)
    if n == 0 or m == 0:
        return [(False, 0, n, 0, m)] if n or m else []
    if n <= MAX_ALIGNED_LINES and m <= MAX_ALIGNED_LINES:
        matcher = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
        return [(op == "equal", i1, i2, j1, j2) for op, i1, i2, j1, j2 in matcher.get_opcodes()]
    anchors = _unique_in_order(ka, kb) if depth < MAX_ANCHOR_DEPTH else []
    if not anchors:
        return [(False, 0, n, 0, m)]
    out: list[tuple[bool, int, int, int, int]] = []
    i0 = j0 = 0
    for i, j in [*anchors, (n, m)]:
        if i > i0 or j > j0:
            # The common head and tail of the part first: cheap, and often all of it.
            head = 0
            while i0 + head < i and j0 + head < j and ka[i0 + head] == kb[j0 + head]:
                head += 1
            if head:
                out.append((True, i0, i0 + head, j0, j0 + head))
            tail = 0
            while i - tail > i0 + head and j - tail > j0 + head and ka[i - 1 - tail] == kb[j - 1 - tail]:
                tail += 1
            a0, b0 = i0 + head, j0 + head
            out += [(same, a0 + p1, a0 + p2, b0 + q1, b0 + q2)
                    for same, p1, p2, q1, q2 in _anchored(ka[a0:i - tail], kb[b0:j - tail], depth + 1)]
            if tail:
                out.append((True, i - tail, i, j - tail, j))
        if i < n:
            out.append((True, i, i + 1, j, j + 1))
        i0, j0 = i + 1, j + 1
    return out


def _unique_in_order(ka: Sequence[str], kb: Sequence[str]) -> list[tuple[int, int]]:
    """The lines found exactly once in ``ka`` and once in ``kb``, as ``(i, j)`` pairs: the
    longest run of them in the same order on both sides (by patience sorting)."""
    seen_a: dict[str, int] = {}
    for i, key in enumerate(ka):
        seen_a[key] = -1 if key in seen_a else i
    seen_b: dict[str, int] = {}
    for j, key in enumerate(kb):
        if seen_a.get(key, -1) >= 0:
            seen_b[key] = -1 if key in seen_b else j
    pairs = sorted((seen_a[key], j) for key, j in seen_b.items() if j >= 0)
    # The longest increasing run of j: piles of their least last j, each pair linked to the one before it.
    tops: list[int] = []
    top_index: list[int] = []
    before: list[int] = []
    for index, (_, j) in enumerate(pairs):
        pile = bisect.bisect_left(tops, j)
        before.append(top_index[pile - 1] if pile else -1)
        if pile == len(tops):
            tops.append(j)
            top_index.append(index)
        else:
            tops[pile] = j
            top_index[pile] = index
    run: list[tuple[int, int]] = []
    index = top_index[-1] if top_index else -1
    while index >= 0:
        run.append(pairs[index])
        index = before[index]
    return run[::-1]


def _section(title: str, kind: Kind, lines: list[DiffLine]) -> SectionDiff:
    return SectionDiff(title, kind, lines, identical=all(line.tag in " ?" for line in lines))


# --- headers ----------------------------------------------------------------------------------


def diff_headers(a: Headers, b: Headers, *, title: str = "headers", ignore: Iterable[str] = (),
                 ordered: bool = False, volatile: Iterable[str] = ()) -> SectionDiff:
    """Compare header fields: names case-insensitive; in any order unless ``ordered``.

    Fields named in ``ignore`` are left out; those named in ``volatile`` are shown, but when
    only they differ the section is ``identical``, with a ``?`` note naming them.
    """
    dropped = {name.lower() for name in ignore}
    quiet = {name.lower() for name in volatile} - dropped

    def prepare(headers: Headers) -> tuple[list[str], list[str]]:
        fields = [(n, v) for n, v in headers.display_items() if n.lower() not in dropped]
        if not ordered:
            # Stable: repeated fields keep their order among themselves.
            fields.sort(key=lambda f: f[0].lower())
        shown = [_safe(f"{n}: {v}") for n, v in fields]
        keys = [f"{n.lower()}: {v}" for n, v in fields]
        return shown, keys

    shown_a, keys_a = prepare(a)
    shown_b, keys_b = prepare(b)
    section = _section(title, "headers", _line_diff(shown_a, shown_b, keys_a, keys_b))
    if quiet and not section.identical:

        def counted(keys: list[str]) -> list[str]:
            return [key for key in keys if key.partition(":")[0] not in quiet]

        if counted(keys_a) == counted(keys_b):
            names: dict[str, str] = {}  # lower-case name -> the first spelling shown
            for line in section.lines:
                if line.tag in "-+":
                    name = line.text.partition(":")[0]
                    names.setdefault(name.lower(), name)
            section.identical = True
            section.lines.append(DiffLine("?", f"only volatile headers differ, not counted: {', '.join(names.values())}"))
    return section


# --- bodies -----------------------------------------------------------------------------------


def _is_json_type(content_type: str) -> bool:
    media = media_type(content_type)
    return media == "application/json" or media.endswith("+json") or media.endswith("/json")


def _as_json(raw: bytes) -> tuple[bool, object]:
    try:
        return True, json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None


def _as_text(raw: bytes, content_type: str) -> str | None:
    """The body as text when it is text: valid UTF-8 without NUL, or declared ``text/*``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # Read as a header value or a reason phrase is: a byte that is not UTF-8 shows as \xNN.
        return read_utf8(raw) if content_type.lower().startswith("text/") else None
    return None if "\x00" in text else text


def diff_bodies(a_bytes: bytes, a_content_type: str, b_bytes: bytes, b_content_type: str,
                ignore: Iterable[str] = (), *, title: str = "body") -> SectionDiff:
    """Compare two bodies by what they are (JSON, form, text or binary)."""
    ignore = list(ignore)
    if not a_bytes and not b_bytes:
        return SectionDiff(title, "text", [], identical=True)
    looks_json = (_is_json_type(a_content_type) or _is_json_type(b_content_type)
                  or a_bytes.lstrip()[:1] in (b"{", b"[") or b_bytes.lstrip()[:1] in (b"{", b"["))
    if looks_json:
        ok_a, data_a = _as_json(a_bytes)
        ok_b, data_b = _as_json(b_bytes)
        if ok_a and ok_b:
            return _json_section(title, data_a, data_b, ignore)
    if is_form(a_content_type) or is_form(b_content_type):
        # Only bodies that are text are forms: curl --data-binary labels any file this way.
        text_a, text_b = _as_text(a_bytes, a_content_type), _as_text(b_bytes, b_content_type)
        if text_a is not None and text_b is not None:
            return _form_section(title, text_a, text_b, ignore)
    text_a, text_b = _as_text(a_bytes, a_content_type), _as_text(b_bytes, b_content_type)
    if text_a is not None and text_b is not None:
        lines_a = [_safe(x) for x in text_a.splitlines()]
        lines_b = [_safe(x) for x in text_b.splitlines()]
        section = _section(title, "text", _line_diff(lines_a, lines_b))
        if section.identical and a_bytes != b_bytes:  # only line endings differ
            section.identical = False
            section.lines.append(DiffLine("?", "the bodies differ only in line endings or a final newline"))
        return section
    return _binary_section(title, a_bytes, b_bytes)


def _json_section(title: str, a: object, b: object, ignore: Sequence[str]) -> SectionDiff:
    for path in ignore:
        segments = _segments(path)
        a, b = _drop(a, segments), _drop(b, segments)

    def pretty(value: object) -> list[str]:
        # JSON escapes the C0 controls itself; the rule still catches C1, bidi and zero-width.
        return [_safe(line) for line in json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()]

    return _section(title, "json", _line_diff(pretty(a), pretty(b)))


def _form_section(title: str, a: str, b: str, ignore: Sequence[str]) -> SectionDiff:
    dropped = set(ignore)

    def fields(text: str) -> list[str]:
        pairs = [(k, v) for k, v in parse_qsl(text, keep_blank_values=True) if k not in dropped]
        pairs.sort(key=lambda p: p[0])  # stable: repeated fields keep their order
        return [_safe(f"{k}={v}") for k, v in pairs]

    return _section(title, "form", _line_diff(fields(a), fields(b)))


def _binary_section(title: str, a: bytes, b: bytes) -> SectionDiff:
    sha_a, sha_b = hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()
    first: int | None = None
    if a != b:
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    section = SectionDiff(title, "binary", identical=a == b, size_a=len(a), size_b=len(b),
                          sha_a=sha_a, sha_b=sha_b, first_difference=first)
    if first is None:
        section.lines = [DiffLine(" ", f"{len(a)} bytes, sha256 {sha_a}")]
    else:
        section.lines = [
            DiffLine("-", f"{len(a)} bytes, sha256 {sha_a}"),
            DiffLine("+", f"{len(b)} bytes, sha256 {sha_b}"),
            DiffLine("?", f"first difference at byte offset {first} (0x{first:x})"),
        ]
    return section


# --- exchanges --------------------------------------------------------------------------------


def _request_line(r: Request) -> str:
    return _safe(f"{r.method} {r.display_url} HTTP/{r.http_version}")


def _status_line(ex: Exchange) -> str:
    r = ex.response
    if r is None:  # and why not: a refused connection, a timeout, a hold that ran out
        why = ": ".join(filter(None, [ex.error or "", ex.error_message or ""]))
        return _safe(f"(no response: {why})" if why else "(no response)")
    return _safe(f"HTTP/{r.http_version} {r.status} {r.reason_text}".rstrip())


def _truncation_notes(section: SectionDiff, a: Request | Response | None, b: Request | Response | None) -> None:
    for label, message in (("a", a), ("b", b)):
        if message is not None and message.body_truncated:
            section.lines.append(DiffLine(
                "?", f"{label}: only the first {len(message.body)} of {message.body_size} bytes were recorded"
            ))


def diff_exchanges(a: Exchange, b: Exchange, *, side: Side = "both", ignore: Iterable[str] = (),
                   header_order: bool = False, volatile: Iterable[str] = ()) -> ExchangeDiff:
    """Compare exchange ``a`` with ``b``.

    Args:
        side: ``"request"``, ``"response"`` or ``"both"``.
        ignore: JSON paths (``data.object.id``, ``items[*].id``) or names of form fields and
            headers to leave out.
        header_order: also compare the order of header fields.
        volatile: response header names shown when they differ but not counted as a difference
            (``capture.outcome.VOLATILE_HEADERS``: Date, X-Request-Id ...); none by default.
    """
    ignore = list(ignore)
    sections: list[SectionDiff] = []
    if side in ("both", "request"):
        ra, rb = a.request, b.request
        sections.append(_section("request line", "text", _line_diff([_request_line(ra)], [_request_line(rb)])))
        sections.append(diff_headers(ra.headers, rb.headers, title="request headers", ignore=ignore,
                                     ordered=header_order))
        body = diff_bodies(ra.body, ra.headers.get("content-type") or "", rb.body,
                           rb.headers.get("content-type") or "", ignore, title="request body")
        _truncation_notes(body, ra, rb)
        sections.append(body)
    if side in ("both", "response"):
        sa, sb = a.response, b.response
        sections.append(_section("status line", "text", _line_diff([_status_line(a)], [_status_line(b)])))
        sections.append(diff_headers(sa.headers if sa else Headers(), sb.headers if sb else Headers(),
                                     title="response headers", ignore=ignore, ordered=header_order,
                                     volatile=volatile))
        body = diff_bodies(sa.body if sa else b"", (sa.headers.get("content-type") or "") if sa else "",
                           sb.body if sb else b"", (sb.headers.get("content-type") or "") if sb else "",
                           ignore, title="response body")
        _truncation_notes(body, sa, sb)
        sections.append(body)
    return ExchangeDiff(a.id, b.id, sections)


# --- rendering --------------------------------------------------------------------------------


def render_unified(diff: ExchangeDiff, context: int = 3) -> str:
    """The diff as text: a header per section, changes with ``context`` unchanged lines around.

    Identical sections take one line; long unchanged runs fold into ``@@ N unchanged lines``.
    """
    out = [f"--- a {diff.a_id}", f"+++ b {diff.b_id}"]
    for section in diff.sections:
        if section.identical and not any(line.tag == "?" for line in section.lines):
            out.append(f"== {section.title}: identical")
            continue
        out.append(f"== {section.title} ({section.kind})")
        changed = [i for i, line in enumerate(section.lines) if line.tag != " "]
        keep = {j for i in changed for j in range(i - context, i + context + 1)}
        skipped = 0
        for i, line in enumerate(section.lines):
            if i in keep:
                if skipped:
                    out.append(f"@@ {skipped} unchanged line{'s' if skipped > 1 else ''}")
                    skipped = 0
                out.append(f"{line.tag}{line.text}")
            else:
                skipped += 1
        if skipped:
            out.append(f"@@ {skipped} unchanged line{'s' if skipped > 1 else ''}")
    return "\n".join(out) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    if width <= 0:
        return [""]
    return [text[i:i + width] for i in range(0, len(text), width)] or [""]


def render_side_by_side(diff: ExchangeDiff, width: int) -> list[tuple[str, str, str]]:
    """Rows ``(tag, left, right)`` for a two-column view ``width`` characters wide.

    ``tag`` is ``"#"`` for a section title (in ``left``), ``" "`` same on both sides, ``"!"``
    changed (a's line left, b's line right), ``"-"`` only left, ``"+"`` only right, ``"?"`` a
    note (in ``left``). Long lines wrap onto further rows with the same tag; every cell fits in
    ``(width - 3) // 2`` characters.
    """
    column = max(1, (width - 3) // 2)
    rows: list[tuple[str, str, str]] = []

    def emit(tag: str, left: str, right: str) -> None:
        for l_part, r_part in zip_longest(_wrap(left, column) if left else [""],
                                          _wrap(right, column) if right else [""], fillvalue=""):
            rows.append((tag, l_part, r_part))

    for section in diff.sections:
        # A section whose only changes are volatile headers is identical, but shows them.
        same = section.identical and all(line.tag in " ?" for line in section.lines)
        title = f"{section.title}{' (identical)' if same else ''}"
        rows.append(("#", title[: max(1, width)], ""))
        lines = section.lines
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.tag == " ":
                emit(" ", line.text, line.text)
                i += 1
            elif line.tag == "?":
                emit("?", line.text, "")
                i += 1
            else:
                # A run of "-" then "+" is a change: pair them up line by line.
                minus: list[str] = []
                plus: list[str] = []
                while i < len(lines) and lines[i].tag == "-":
                    minus.append(lines[i].text)
                    i += 1
                while i < len(lines) and lines[i].tag == "+":
                    plus.append(lines[i].text)
                    i += 1
                for left, right in zip_longest(minus, plus):
                    if left is not None and right is not None:
                        emit("!", left, right)
                    elif left is not None:
                        emit("-", left, "")
                    else:
                        emit("+", "", right or "")
    return rows
