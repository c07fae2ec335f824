"""Safe rendering of captured data: escaping, pretty-printing, hex dumps.

A body is decoded from its Content-Encoding and judged JSON, form, XML, text or binary by
:func:`devtunnel.capture.bodies.readable_body`, the rule ``devtunnel show`` follows too (its
names are re-exported here for the screens).

Captured bytes are hostile. Nothing here passes them to Rich markup: every piece of captured
text becomes a :class:`rich.text.Text` built from plain strings, with control and invisible
characters replaced by visible escapes such as ``\\x1b`` (the rules of
:mod:`devtunnel.values.terminal`, shared with the CLI), so markup like ``[bold]`` and terminal
escape sequences show literally and never restyle the screen.

Large bodies are never rendered whole: :class:`TextLines` and :class:`HexLines` describe a
body as rows and render one row at a time, for a view that only asks for the rows it shows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import parse_qsl

from rich.cells import cell_len, chop_cells
from rich.style import Style
from rich.text import Text

from devtunnel.capture.bodies import DECODE_LIMIT, BodyKind, body_kind, pretty_json, readable_body
from devtunnel.capture.model import Request, Response
from devtunnel.values.exchange_ids import stable_short_id
from devtunnel.values.terminal import as_text, escape
from devtunnel.capture.verdict import DUPLICATE_MARK, NO_SECRET, Signature, Verdict
from devtunnel.capture.verdict import SIGNATURE_MARKS as VERDICT_MARKS
from devtunnel.values.sizes import format_size

__all__ = [
    "BodyKind",
    "BodyView",
    "Lines",
    "TextLines",
    "FoldedLines",
    "HexLines",
    "PRETTY_LIMIT",
    "FOLD_LIMIT",
    "escape_control",
    "escape_line",
    "safe_text",
    "message_line",
    "message_text",
    "body_kind",
    "describe_body",
    "form_fields",
    "DECODE_LIMIT",
    "pretty_json",
    "pretty_xml",
    "hex_row",
    "highlight_json_line",
    "highlight_xml_line",
    "format_timestamp",
    "status_style",
    "SIGNATURE_MARKS",
    "DUPLICATE_MARK",
    "TABLE_LEGEND",
    "webhook_marks",
    "webhook_event",
    "webhook_section",
]

PRETTY_LIMIT = 1024 * 1024
"""Bodies larger than this are shown as received: reformatting them would make opening slow."""

FOLD_LIMIT = 16 * 1024 * 1024
"""Bodies shown as received are folded at the view's width up to this many characters..."""

WIDE_FOLD_LIMIT = 256 * 1024
"""... of which at most this many in rows holding characters that may be two cells wide."""

MAX_ROW = 1000
"""Longer lines are cut into rows of this many characters (a minified 10 MiB JSON is one line)."""

def escape_control(value: str) -> str:
    """``value`` with every control or invisible character as a visible escape, backslashes kept.

    For text a person may edit (the edit screen's fields): a backslash stays one backslash.
    Shown-only text goes through :func:`safe_text`, which also doubles backslashes (as the CLI).
    """
    return escape(value, double_backslash=False)


def escape_line(line: str) -> str:
    """Escape control characters in one line of a body; tabs become spaces, backslashes stay."""
    if line.isprintable():
        return line  # the usual row: nothing to escape, no need to look at each character
    line = escape(line, keep="\t", double_backslash=False)
    return line.expandtabs(4) if "\t" in line else line


def safe_text(value: str, style: str | Style = "") -> Text:
    """Captured text as a one-line ``Text`` that shows exactly what was received (no markup)."""
    return as_text(value, style)


def message_line(value: str) -> str:
    """A message not written by us (an exception, what a relay or service said, a path, filter
    text) as a string fit for a notification with ``markup=False``: control and invisible
    characters as visible escapes, line breaks and backslashes kept."""
    return escape(value, keep="\n", double_backslash=False)


def message_text(value: str, style: str | Style = "") -> Text:
    """:func:`message_line` as ``Text`` for a ``Static`` or ``Label``: never read as markup, so
    ``[@click=...]`` stays text and an unbalanced ``[/x]`` cannot raise."""
    return Text(message_line(value), style=style, end="")


# ---------------------------------------------------------------------------- reformatting

_XML_TOKEN = re.compile(r"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<[^>]*>|[^<]+", re.S)


def pretty_xml(text: str) -> str:
    """XML indented one level per open element.

    A tokenizer rather than a parser: it never resolves entities or fetches anything, and it
    indents broken XML as well as it can instead of refusing it.
    """
    out: list[str] = []
    depth = 0
    for match in _XML_TOKEN.finditer(text):
        token = match.group()
        if not token.startswith("<"):
            stripped = token.strip()
            if stripped:
                out.append("  " * depth + stripped)
            continue
        if token.startswith("</"):
            depth = max(depth - 1, 0)
            out.append("  " * depth + token)
        elif token.startswith(("<?", "<!")) or token.endswith("/>"):
            out.append("  " * depth + token)
        else:
            out.append("  " * depth + token)
            depth += 1
    # Put short text content back on its element's line: <name>value</name>.
    merged: list[str] = []
    i = 0
    while i < len(out):
        if (
            i + 2 < len(out)
            and not out[i + 1].lstrip().startswith("<")
            and out[i + 2].lstrip().startswith("</")
            and out[i].lstrip().startswith("<")
            and not out[i].lstrip().startswith(("</", "<?", "<!"))
            and not out[i].endswith("/>")
        ):
            merged.append(out[i] + out[i + 1].lstrip() + out[i + 2].lstrip())
            i += 3
        else:
            merged.append(out[i])
            i += 1
    return "\n".join(merged)


def form_fields(text: str) -> list[tuple[str, str]]:
    """The fields of an ``application/x-www-form-urlencoded`` body, in order, blanks kept."""
    return parse_qsl(text, keep_blank_values=True, errors="replace")


def _json_fields(fields: Sequence[tuple[str, str]]) -> list[tuple[str, Lines]]:
    """The fields whose value is a JSON object or array, reformatted and highlighted."""
    out: list[tuple[str, Lines]] = []
    for name, value in fields:
        if value.lstrip()[:1] in ("{", "[") and (pretty := pretty_json(value)) is not None:
            out.append((name, TextLines(pretty, highlight_json_line)))
    return out


# ---------------------------------------------------------------------------- highlighting

_JSON_STYLES = {
    "key": Style(color="bright_blue", bold=True),
    "string": Style(color="green"),
    "number": Style(color="cyan"),
    "literal": Style(color="magenta"),
    "punct": Style(dim=True),
}
_JSON_TOKEN = re.compile(
    r'(?P<string>"(?:[^"\\]|\\.)*")(?P<colon>\s*:)?'
    r"|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
    r"|(?P<literal>\btrue\b|\bfalse\b|\bnull\b)"
    r"|(?P<punct>[{}\[\],:])"
)


def highlight_json_line(line: str) -> Text:
    """One line of indented JSON (already escaped) with keys, strings and numbers coloured.

    Pretty-printed JSON never splits a token across lines, so line-at-a-time is exact.
    """
    text = Text(line, no_wrap=True, end="")
    for match in _JSON_TOKEN.finditer(line):
        if match.group("string") is not None:
            style = _JSON_STYLES["key" if match.group("colon") else "string"]
            text.stylize(style, match.start("string"), match.end("string"))
        else:
            kind = match.lastgroup or "punct"
            text.stylize(_JSON_STYLES[kind], match.start(), match.end())
    return text


_XML_TAG = re.compile(r"<!--.*?(?:-->|$)|</?[^\s>/]+|/?>")
_XML_ATTR = re.compile(r'([\w:.-]+)(=)("[^"]*"|\'[^\']*\')')


def highlight_xml_line(line: str) -> Text:
    """One line of XML with tags, attribute names and values coloured."""
    text = Text(line, no_wrap=True, end="")
    for match in _XML_TAG.finditer(line):
        style = "dim" if match.group().startswith("<!--") else "bright_blue"
        text.stylize(style, match.start(), match.end())
    for match in _XML_ATTR.finditer(line):
        text.stylize("cyan", match.start(1), match.end(1))
        text.stylize("green", match.start(3), match.end(3))
    return text


# ---------------------------------------------------------------------------- rows


class Lines(Protocol):
    """Rows of a document, rendered one at a time for a view that shows only some of them."""

    @property
    def width(self) -> int:
        """Cells in the widest row."""
        ...

    def __len__(self) -> int: ...

    def line(self, index: int) -> Text:
        """Row ``index`` as styled, escaped text."""
        ...


def _split_rows(text: str) -> tuple[list[str], list[int]]:
    """The rows of ``text`` and the index of each row that a long line was cut after (it goes on
    in the next row: there is no line break there)."""
    # CRLF line ends go; a lone CR elsewhere stays and is escaped as \r. Splitting and measuring
    # run in C; only bodies with very long lines take the Python loop that cuts them.
    rows = (text.replace("\r\n", "\n") if "\r\n" in text else text).split("\n")
    if max(map(len, rows), default=0) <= MAX_ROW:
        return rows, []
    cut: list[str] = []
    continued: list[int] = []
    for line in rows:
        if len(line) <= MAX_ROW:
            cut.append(line)
        else:
            start = len(cut)
            cut.extend(line[i : i + MAX_ROW] for i in range(0, len(line), MAX_ROW))
            continued.extend(range(start, len(cut) - 1))
    return cut, continued


class TextLines:
    """Text cut into rows (at newlines, and every ``MAX_ROW`` characters), escaped lazily."""

    def __init__(self, text: str, highlight: Callable[[str], Text] | None = None) -> None:
        self._rows, self._continued = _split_rows(text)
        self._highlight = highlight
        self._foldable: bool | None = None
        widest = max(map(len, self._rows), default=0)
        if text.isascii():
            # Escapes and tabs make a row wider than its length; only rows holding them are measured.
            widest = max([widest, *(len(escape_line(r)) for r in self._rows if not r.isprintable())])
        else:
            # Wide characters take two cells; measuring every row of a huge body costs too much.
            widest = max([widest, *(cell_len(escape_line(r)) for r in self._rows)]) if len(text) < PRETTY_LIMIT else widest * 2
        self._width = widest

    @property
    def width(self) -> int:
        """Cells in the widest row."""
        return self._width

    def __len__(self) -> int:
        return len(self._rows)

    def line(self, index: int) -> Text:
        """Row ``index``, escaped and highlighted."""
        row = escape_line(self._rows[index])
        if self._highlight is not None:
            return self._highlight(row)
        return Text(row, no_wrap=True, end="")

    def plain(self) -> str:
        """All rows joined, escaped (for tests and copying what is shown)."""
        return "\n".join(escape_line(row) for row in self._rows)

    def foldable(self) -> bool:
        """Whether :meth:`folded` folds this document (it keeps one too costly to fold as it is)."""
        if self._foldable is None:
            total = sum(map(len, self._rows))
            # Characters that may be two cells wide are measured one by one: about a second a
            # megabyte, paid again on every resize. Text of one cell a character is sliced.
            wide = sum(len(row) for row in self._rows if not row.isascii() and _SINGLE_CELL.fullmatch(row) is None)
            self._foldable = total <= FOLD_LIMIT and wide <= WIDE_FOLD_LIMIT
        return self._foldable

    def folded(self, width: int) -> Lines:
        """These rows, escaped, folded at ``width`` cells (highlighting is left out).

        A document that is not :meth:`foldable` is returned as it is (it scrolls sideways).
        """
        if not self.foldable():
            return self
        rows = [escape_line(row) for row in self._rows]
        if self._continued:
            # A line cut into rows is folded whole: the cuts are not line breaks, and folding each
            # part would leave a short row (a break that is not in the body) every MAX_ROW characters.
            continued = set(self._continued)
            lines: list[str] = []
            parts: list[str] = []
            for index, row in enumerate(rows):
                parts.append(row)
                if index not in continued:
                    lines.append("".join(parts))
                    parts = []
            rows = lines
        return FoldedLines(rows, width)


_SINGLE_CELL = re.compile("[\u0020-\u007e\u00a0-\u02ff\u0370-\u0482\u048a-\u052f\u2010-\u2027\u2030-\u205e\u2500-\u25ff]*")
"""Text whose every character takes one cell: Latin, Greek, Cyrillic, punctuation, box drawing."""


class FoldedLines:
    """Escaped rows folded at a width, so every character is on screen without sideways scrolling.

    Args:
        rows: rows already escaped (:func:`escape_line`).
        width: cells per row on screen (at least 1).
    """

    def __init__(self, rows: Sequence[str], width: int) -> None:
        width = max(1, width)
        folded: list[str] = []
        for row in rows:
            cells = len(row) if row.isascii() else cell_len(row)
            if cells <= width:
                folded.append(row)
            elif cells == len(row):
                # One cell a character (cell_len answers that without a Python loop): slice.
                folded.extend(row[i : i + width] for i in range(0, len(row), width))
            else:
                folded.extend(chop_cells(row, width))
        self._rows = folded
        self.width = width
        """Cells in the widest row: the folding width."""

    def __len__(self) -> int:
        return len(self._rows)

    def line(self, index: int) -> Text:
        """Row ``index`` (a part of a longer row when it was folded)."""
        return Text(self._rows[index], no_wrap=True, end="")


_PRINTABLE = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))
HEX_WIDTH = 16


def hex_row(data: bytes, offset: int) -> Text:
    """One hex-dump row: offset, 16 bytes in hex (two groups of 8), and their ASCII.

    76 cells, one space between the parts: what an 80-column terminal leaves the detail's body
    beside its scrollbar (with two, as ``hexdump -C`` has, the ASCII's end was cut off).
    """
    chunk = data[offset : offset + HEX_WIDTH]
    hex_bytes = chunk.hex(" ")
    if len(chunk) > 8:
        hex_bytes = hex_bytes[:23] + "  " + hex_bytes[24:]
    ascii_part = chunk.translate(_PRINTABLE).decode("ascii")
    text = Text(no_wrap=True, end="")
    text.append(f"{offset:08x}", "dim")
    text.append(" ")
    text.append(hex_bytes.ljust(HEX_WIDTH * 3), "cyan")
    text.append(" │")
    text.append(ascii_part.ljust(HEX_WIDTH))
    text.append("│")
    return text


class HexLines:
    """A body as a hex dump: one row per 16 bytes, rendered on demand."""

    width = 8 + 1 + HEX_WIDTH * 3 + 2 + HEX_WIDTH + 1

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __len__(self) -> int:
        return (len(self._data) + HEX_WIDTH - 1) // HEX_WIDTH

    def line(self, index: int) -> Text:
        """The row for bytes ``index * 16`` to ``index * 16 + 15``."""
        return hex_row(self._data, index * HEX_WIDTH)


# ---------------------------------------------------------------------------- bodies


@dataclass(frozen=True)
class BodyView:
    """How one request or response body is shown."""

    kind: BodyKind
    """What the body was taken to be."""
    label: str
    """A short line above the body: kind, size, and whether it was cut or reformatted."""
    lines: Lines | None = None
    """Rows to show (None for an empty body or a form)."""
    fields: Sequence[tuple[str, str]] = ()
    """The fields of a form body."""
    field_json: Sequence[tuple[str, Lines]] = ()
    """A form's fields that hold a JSON object or array (Slack's and GitHub's ``payload``), by
    name, reformatted as a JSON body is: the table's cell shows only their start."""
    fold: bool = False
    """Fold the rows at the view's width: text shown as received (not reformatted), whose long
    lines are cut every ``MAX_ROW`` characters, reads top to bottom instead of skipping what
    runs past the right edge."""


def describe_body(message: Request | Response, *, pretty: bool = True, hex_dump: bool = False) -> BodyView:
    """Decide how to show ``message``'s body and prepare its rows (without rendering them).

    Args:
        message: the request or response.
        pretty: reformat JSON and XML, and show forms as a table.
        hex_dump: show any body as a hex dump.
    """
    body = message.body
    notes: list[str] = []
    if message.body_truncated or message.body_size > len(body):
        why = message.body_cut_why
        notes.append(f"truncated: recorded the first {format_size(len(body))} of {format_size(message.body_size)}"
                     + (f": {why}" if why else ""))
    readable = readable_body(message, decode=not hex_dump)
    notes.extend(readable.notes)
    body, kind, size = readable.data, readable.kind, format_size(readable.size)
    if kind == "empty":
        return BodyView("empty", " · ".join(["no body", *notes]))
    if hex_dump or kind == "binary":
        label = f"{'binary' if kind == 'binary' else kind} · {size} · hex dump"
        return BodyView(kind, " · ".join([label, *notes]), lines=HexLines(body))
    text = body.decode("utf-8")
    reformatted: str | None = None
    if pretty and len(body) > PRETTY_LIMIT and kind in ("json", "xml"):
        notes.append(f"shown as received: larger than {format_size(PRETTY_LIMIT)}")
    elif pretty and kind == "json" and not message.body_truncated:
        reformatted = pretty_json(text)
        if reformatted is None:
            notes.append("does not parse as JSON")
    elif pretty and kind == "xml":
        reformatted = pretty_xml(text)
    elif pretty and kind == "form":
        fields = form_fields(text)
        return BodyView("form", " · ".join([f"form · {size}", *notes]), fields=fields,
                        field_json=_json_fields(fields) if len(body) <= PRETTY_LIMIT else ())
    highlight = {"json": highlight_json_line, "xml": highlight_xml_line}.get(kind) if pretty else None
    shown = reformatted if reformatted is not None else text
    label = f"{kind} · {size}" + ("" if pretty else " · raw")
    lines = TextLines(shown, highlight)
    if reformatted is None and not lines.foldable():
        notes.append("too large to fold: scroll sideways")
    return BodyView(kind, " · ".join([label, *notes]), lines=lines, fold=reformatted is None)


# ---------------------------------------------------------------------------- times


def format_timestamp(seconds: float) -> str:
    """Local wall-clock time with milliseconds and the UTC offset: ``2026-11-26 12:30:05.120 +0000``."""
    moment = datetime.fromtimestamp(seconds).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} " + moment.strftime("%z")


def status_style(status: int | None) -> str:
    """The colour of a status code: green 2xx, cyan 3xx, yellow 4xx, red 5xx and failures."""
    if status is None or status >= 500:
        return "bold red"
    if status >= 400:
        return "bold yellow"
    if status >= 300:
        return "bold cyan"
    return "bold green"


# ---------------------------------------------------------------------------- webhooks

_SIGNATURE_STYLES = {Signature.VALID: "bold green", Signature.INVALID: "bold red", Signature.UNSIGNED: "yellow",
                     Signature.UNVERIFIED: "dim"}
SIGNATURE_MARKS: dict[Signature, tuple[str, str, str]] = {
    state: (mark, _SIGNATURE_STYLES[state], meaning) for state, (mark, meaning) in VERDICT_MARKS.items()
}
"""Per signature state: its one-cell mark in the request table, its style, and what it means
(the marks and meanings are ``capture.verdict``'s, which ``devtunnel requests`` shows too)."""

TABLE_LEGEND: list[tuple[str, str]] = [
    *((mark, meaning) for mark, _style, meaning in SIGNATURE_MARKS.values()),
    (DUPLICATE_MARK, "duplicate: the same delivery id was captured before"),
]
"""The marks of the request table, for the help screen (from the same values the table draws)."""


def webhook_marks(verdict: Verdict | None) -> list[tuple[str, str]]:
    """The two one-cell marks of a row, ``(text, style)``: the signature's, then ``≡`` for a duplicate."""
    if verdict is None:
        return [("  ", "")]
    mark, style, _meaning = SIGNATURE_MARKS.get(verdict.signature, SIGNATURE_MARKS[Signature.UNVERIFIED])
    return [(mark, style), (DUPLICATE_MARK if verdict.duplicate_of else " ", "bold magenta")]


def webhook_event(verdict: Verdict | None) -> str:
    """``stripe · payment_intent.succeeded`` (escaped: the event type comes from the sender); ``""`` for no webhook."""
    if verdict is None:
        return ""
    return f"{escape(verdict.provider)} · {escape(verdict.event_type) if verdict.event_type else '?'}"


def webhook_section(verdict: Verdict, *, title: str = "", secret_env: str = "") -> Text:
    """The detail screen's Webhook section: provider, event, delivery id, signature and why, duplicate.

    Args:
        verdict: the verdict (its event type, delivery id and reason may hold anything the sender put).
        title: the provider's name as people write it (``Stripe``), if known.
        secret_env: the variable its secret is read from, for the hint when it was not verified.
    """
    mark, style, _meaning = SIGNATURE_MARKS.get(verdict.signature, SIGNATURE_MARKS[Signature.UNVERIFIED])
    signature = Text(end="")
    signature.append(f"{mark} {verdict.signature.value}", style)
    if verdict.reason:
        signature.append(": ")
        signature.append(escape(verdict.reason), "red" if verdict.signature is Signature.INVALID else "")
    rows: list[tuple[str, str | Text]] = [
        ("Provider", escape(f"{title} ({verdict.provider})" if title and title.lower() != verdict.provider
                            else title or verdict.provider)),
        ("Event", escape(verdict.event_type) if verdict.event_type else Text("unknown", "dim")),
        ("Delivery id", escape(verdict.delivery_id) if verdict.delivery_id else Text("none", "dim")),
        ("Signature", signature),
    ]
    if verdict.duplicate_of:
        duplicate = Text(end="")
        duplicate.append(f"{DUPLICATE_MARK} {stable_short_id(verdict.duplicate_of)}", "bold magenta")
        duplicate.append("  the first capture of this delivery id", "dim")
        rows.append(("Duplicate of", duplicate))
    if verdict.signature is Signature.UNVERIFIED and verdict.reason.startswith(NO_SECRET):
        # The variable the agent looked in (config may name another than the conventional one).
        variable = verdict.missing_secret or secret_env
        if variable not in verdict.reason:  # "no secret: set STRIPE_WEBHOOK_SECRET" says it already
            rows.append(("Hint", Text(f"set {escape(variable)} to verify", "italic")))
    text = Text(end="")
    for label, value in rows:
        text.append(f"{label:<13}", "bold")
        text.append(value)
        text.append("\n")
    text.rstrip()
    return text
