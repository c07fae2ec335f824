"""Captured text made safe for a terminal: one set of rules for the CLI, the log line and the TUI.

Captured data is hostile. A path or header can hold escape sequences that move the cursor,
retitle the window or rewrite the clipboard, bidi overrides that reorder what follows, and
zero-width characters that hide text or make two different values look the same. Before any
captured text reaches a terminal (printed, or drawn by Rich/Textual), every such character is
written as a visible escape:

==============================================  ==========================================
characters                                      shown as
==============================================  ==========================================
tab, line feed, carriage return (a lone CR too) ``\\t`` ``\\n`` ``\\r``
other C0 controls, ESC, DEL, C1 controls        ``\\x1b``, ``\\x7f``, ``\\x9b`` ...
format characters (Unicode ``Cf``): bidi        ``\\u202e``, ``\\u200b``, ``\\ufeff`` ...
overrides and isolates, zero-width space and
joiners, word joiner, BOM, soft hyphen, tags
line and paragraph separators (``Zl``, ``Zp``)  ``\\u2028``, ``\\u2029``
private-use and unassigned code points          ``\\ue000``, ``\\U000e0080`` ...
invisible "letters" (Hangul fillers)            ``\\u3164`` ...
bytes that are not UTF-8 (:func:`escape_bytes`) ``\\xff`` ...
a backslash                                     ``\\\\`` (so an escape we print cannot be faked)
==============================================  ==========================================

Everything else (printable ASCII and printable Unicode, wide CJK, emoji) passes unchanged.
The output of :func:`escape` never holds a character a terminal would act on or hide, so it
may be printed as is, or handed to Rich as plain text (``rich.text.Text(escape(value))``;
never as markup, see :func:`as_text`).

The API:

- :func:`escape` ``(text, *, keep="", double_backslash=True) -> str`` for one line (a path,
  a header, a message); ``keep="\\n\\t"`` lets newlines and tabs through for a multi-line
  body; ``double_backslash=False`` shows backslashes as they are (bodies, where JSON's
  ``\\"`` must read as JSON).
- :func:`escape_bytes` ``(data, ...) -> str``: the same for raw bytes, invalid UTF-8 as ``\\xNN``.
- :func:`read_utf8` ``(data) -> str``: how captured bytes read as text for a person (a header
  value, a reason phrase): UTF-8 where they are, each other byte kept as a ``surrogateescape``
  surrogate that :func:`escape` shows as ``\\xNN``. Escape the result before showing it; it is
  not for JSON or a database (a lone surrogate does not encode).
- :func:`read_utf8_json` ``(data) -> str``: the same reading for JSON, a database or a filter:
  each byte that is not UTF-8 is U+FFFD (one where the terminal shows one ``\\xNN``), so the
  text always encodes. :func:`json_safe` ``(text) -> str`` does that to text already read.
- :func:`as_text` ``(text, style="") -> rich.text.Text``: the escaped text as a one-line Rich
  ``Text`` (Rich is imported only when this is called).
- :func:`quoted` ``(value) -> str``: a value (text, or bytes read as text) between quotes for a
  message, *not* escaped: the message keeps it as it came, and each output escapes the whole
  message once (the CLI's error line, the log's formatter, the inspector). ``repr()`` in a message would escape it a first
  time, and the output a second (an ESC shown as ``\\\\x1b``, a quote as ``\\\\'``).
- :func:`clipped` ``(text, limit) -> str``: a peer's text as a message keeps it, its first
  ``limit`` characters and ``… (N more characters)``; not escaped either.
- :func:`needs_escape` ``(ch) -> bool``: the rule for one character.
- :func:`is_plain` ``(text) -> bool``: True when :func:`escape` leaves ``text`` as it is. The
  rules go character by character, so one call over several values joined answers for each
  of them.
- :func:`display_width` ``(text) -> int`` and :func:`truncate` ``(text, width) -> str``: the
  columns escaped text takes (wide CJK counts twice), and the text cut to ``width`` columns
  ending in ``…``.
"""

from __future__ import annotations

import re
import traceback
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.style import Style
    from rich.text import Text

__all__ = [
    "as_text", "clipped", "display_width", "escape", "escape_bytes", "is_plain", "json_safe", "needs_escape", "quoted", "read_utf8",
    "read_utf8_json", "traceback_text", "truncate", "unescape",
]

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Letters that draw as nothing: used to make a value look empty or like another one.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
# The only characters ``str.isprintable()`` passes that may still need a change.
_PRINTABLE_SPECIAL = re.compile("[\\\\\u115f\u1160\u3164\uffa0]")
_KEEPABLE = frozenset("\t\n")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")  # escapes re reads: mypyc takes no surrogate in a literal
"""A character no UTF-8 encoder takes: a byte kept by ``surrogateescape``, or a lone surrogate."""


def needs_escape(ch: str) -> bool:
    """Whether the character ``ch`` is shown as an escape (the backslash aside)."""
    return unicodedata.category(ch) in _HIDDEN_CATEGORIES or ch in _INVISIBLE_LETTERS


def is_plain(text: str) -> bool:
    """True when ``escape(text)`` (with its defaults) is ``text`` itself: the quick check
    ``escape`` starts with. False asks for ``escape``, which may still leave the text as it is
    (a no-break space is not ``isprintable()`` but shows as itself)."""
    if text.isascii():  # the usual path: of the special characters, ASCII holds the backslash only
        return text.isprintable() and "\\" not in text
    return text.isprintable() and _PRINTABLE_SPECIAL.search(text) is None


def _escape_char(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        # A byte that was not UTF-8, carried as a lone surrogate by "surrogateescape" decoding.
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(text: str, *, keep: str = "", double_backslash: bool = True) -> str:
    """``text`` with every control, format or invisible character written as a visible escape.

    Args:
        text: captured text of any origin.
        keep: characters among ``"\\t\\n"`` to leave as they are (for multi-line bodies).
        double_backslash: write a backslash as ``\\\\`` so printed escapes are unambiguous;
            ``False`` for bodies, where backslashes belong to the content (JSON strings).

    Raises:
        ValueError: ``keep`` names a character other than tab or newline.
    """
    if not _KEEPABLE.issuperset(keep):
        raise ValueError(f"only tab and newline can be kept, not {keep!r}")
    if is_plain(text):
        return text  # the usual path: nothing hidden, no backslash, no invisible letter
    out: list[str] = []
    for ch in text:
        if ch in keep:
            out.append(ch)
        elif ch == "\\":
            out.append("\\\\" if double_backslash else ch)
        elif needs_escape(ch):
            out.append(_escape_char(ch))
        else:
            out.append(ch)  # printable, or a space separator (NBSP, ideographic space)
    return "".join(out)


_ESCAPED = re.compile(r"\\(?:([\\tnr])|x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8}))")
_UNNAMED = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def _unescape_one(found: re.Match[str]) -> str:
    named, *codes = found.groups()
    if named is not None:
        return _UNNAMED[named]
    code = int(next(digits for digits in codes if digits is not None), 16)
    return chr(code) if code <= 0x10FFFF else found.group(0)


def unescape(text: str) -> str:
    """Text ``escape`` wrote (with its backslashes doubled) as it was: what another process sent
    escaped (the agent API's app ``message``), to be kept as written and escaped once where shown.
    A lone surrogate, which neither the store nor JSON takes, reads as U+FFFD (``json_safe``)."""
    return json_safe(_ESCAPED.sub(_unescape_one, text)) if "\\" in text else text


def quoted(value: object) -> str:
    """``value`` named in a message: text between quotes as it is, bytes (a captured header
    name) as the text :func:`read_utf8_json` reads, anything else as ``repr()``.

    Not escaped: every output escapes a message once (``escape``), so a value quoted here shows
    an ESC as ``\\x1b`` and a quote as itself (``repr()`` of bytes would show ``b'\\\\x1b'``
    once escaped). The quotes are ``'`` unless the text holds one and no ``"``, as ``repr()``
    picks them.
    """
    if isinstance(value, bytes):
        value = read_utf8_json(value)  # a message may be stored or sent as JSON: text that encodes
    if not isinstance(value, str):
        return repr(value)
    mark = '"' if "'" in value and '"' not in value else "'"
    return f"{mark}{value}{mark}"


def clipped(text: str, limit: int) -> str:
    """``text`` from a peer as a message keeps it: its first ``limit`` characters, then
    ``… (N more characters)`` if it was longer (a peer's reason can be a megabyte). Not
    escaped: the outputs do it."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def read_utf8(data: bytes) -> str:
    """``data`` read as UTF-8, each byte that is not kept as a surrogate (``\\xNN`` once escaped).

    The one reading of captured bytes shown to a person: ``Größe`` reads as itself, not as the
    latin-1 ``GrÃ¶Ãe``, and a stray ``\\xf6`` shows as that byte, not as a guessed letter.
    """
    return data.decode("utf-8", "surrogateescape")


def json_safe(text: str) -> str:
    """``text`` with each lone surrogate (a byte :func:`read_utf8` kept) as U+FFFD, so it encodes."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def read_utf8_json(data: bytes) -> str:
    """``data`` read as :func:`read_utf8` does, each byte that is not UTF-8 as U+FFFD: the one
    reading of captured bytes for JSON (the agent API, HAR), the database and the filters.

    ``Größe`` reads as itself; a stray ``\\xf6`` is one U+FFFD, where the terminal shows
    ``\\xf6``. The text always encodes.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return json_safe(read_utf8(data))


def escape_bytes(data: bytes, *, keep: str = "", double_backslash: bool = True) -> str:
    """``data`` as UTF-8 text made safe by :func:`escape`; bytes that are not UTF-8 become ``\\xNN``."""
    return escape(read_utf8(data), keep=keep, double_backslash=double_backslash)


def as_text(text: str, style: str | Style = "") -> Text:
    """``text`` escaped as a one-line Rich ``Text`` (plain text: markup in it shows literally)."""
    # Imported here: the CLI prints plain lines and never loads Rich.
    from rich.text import Text

    return Text(escape(text), style=style, no_wrap=True, end="")


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal columns taken by ``text`` (already escaped): wide CJK characters count twice."""
    if text.isascii():  # one column each: most of a table, measured without a lookup per character
        return len(text)
    return sum(_char_width(ch) for ch in text)


def truncate(text: str, width: int, ellipsis: str = "…") -> str:
    """``text`` cut to at most ``width`` columns, ending in ``ellipsis`` when cut."""
    if width <= 0:
        return ""
    if display_width(text) <= width:
        return text
    room = width - display_width(ellipsis)
    if text.isascii():
        return text[:room] + ellipsis if room >= 0 else ellipsis[:width]
    out: list[str] = []
    used = 0
    for ch in text:
        w = _char_width(ch)
        if used + w > room:
            break
        out.append(ch)
        used += w
    return "".join(out) + ellipsis if room >= 0 else ellipsis[:width]


def traceback_text(exc: BaseException) -> str:
    """The traceback of ``exc`` as Python prints it, made safe for a terminal.

    Its message may quote what came from the network (a header, a relay's reason): each control
    character is escaped, the lines stay lines. No frame's local variables are written: one may
    hold the relay token or a webhook secret.
    """
    return escape("".join(traceback.format_exception(exc)), keep="\n\t")
