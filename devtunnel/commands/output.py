"""Printing helpers for the command line: tables, sizes, durations, one-line errors.

Captured data and anything else from the network is hostile: a request path or a relay's
refusal reason can hold escape sequences that move the cursor, retitle the window or write the
clipboard. Such text goes through ``devtunnel.values.terminal.escape`` (the one set of rules,
shared with the inspector) before it reaches a terminal: :func:`table` and :func:`err` do it
themselves, and nothing here interprets markup.
"""

from __future__ import annotations

import codecs
import io
import logging
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import TextIO

from devtunnel.values.durations import human_duration
from devtunnel.values.terminal import display_width, escape, traceback_text, truncate

__all__ = ["safe", "display_width", "truncate", "Column", "table", "output_width", "no_screen", "utf8_output",
           "tolerant_output", "human_duration", "hex_preview", "err", "EscapingFormatter", "escape_tracebacks"]


def safe(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` escaped for a terminal by the shared rules (``values.terminal.escape``).

    Args:
        text: text of any origin.
        keep_newlines: let ``\\n`` and ``\\t`` through, for multi-line bodies.
    """
    return escape(text, keep="\n\t" if keep_newlines else "")


@dataclass(frozen=True)
class Column:
    """One column of a :func:`table`.

    Attributes:
        title: the header text.
        align: ``"<"`` (left) or ``">"`` (right).
        flexible: this column shrinks (truncating its cells) to fit the width. Of several, the
            last shrinks first, to its ``min_width``, then the one before it.
        min_width: the narrowest a flexible column gets.
        optional: 0 for a column always shown; otherwise columns are left out, 1 first, then 2
            ..., while the table would not fit even with the flexible column at ``min_width``.
        max_width: the widest its cells are shown (cut with ``…``), or None. For a column of
            values a sender chooses (an event type): one very wide cell must not leave no room
            for the others, and make the table drop optional columns for every row.
    """

    title: str
    align: str = "<"
    flexible: bool = False
    min_width: int = 8
    optional: int = 0
    max_width: int | None = None


def _pad(text: str, width: int, align: str) -> str:
    gap = " " * max(0, width - display_width(text))
    return gap + text if align == ">" else text + gap


def output_width() -> int:
    """The width lines are fitted to: ``COLUMNS``, else the terminal's; a pipe or a file has none.

    ``devtunnel requests | grep /webhooks/stripe`` must find the whole path, as ``ps`` and
    ``kubectl get`` leave piped lines whole.
    """
    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return shutil.get_terminal_size((100, 24)).columns
    return sys.maxsize


def no_screen() -> str | None:
    """Why the inspector cannot run here, or None when it can.

    It reads keys from stdin and draws on stderr (Textual's choice), and stdout is where a script
    reads the log lines: all three must be terminals, and one that moves the cursor (``TERM=dumb``,
    as in Emacs' shell, says it cannot) and writes UTF-8 (in another locale every line and mark
    of the screen drew as ``\\u2500``). Started with ``< /dev/null``, ``| cat``, ``2> log``,
    ``nohup`` or from a script, Textual drew escape codes into the file and spun on the closed
    input, deaf to Ctrl-C; the commands that would open it run without it instead (``http``,
    ``up``) or say so (``inspect``).
    """
    for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout), ("stderr", sys.stderr)):
        try:
            if stream is None or not stream.isatty():
                return f"{name} is not a terminal"
        except ValueError:  # closed
            return f"{name} is not a terminal"
    if os.environ.get("TERM") == "dumb":
        return "TERM is dumb"
    if not _writes_utf8(sys.stderr):  # the screen's lines and marks would draw as \u2500 ...
        return f"the terminal's encoding is {sys.stderr.encoding}, not UTF-8"
    return None


def _writes_utf8(stream: TextIO) -> bool:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return codecs.lookup(encoding).name == "utf-8"


def utf8_output() -> bool:
    """Whether stdout writes UTF-8, as it does but for a locale that says otherwise
    (``LANG=en_US.ISO-8859-1``, ``LC_ALL=C`` with ``PYTHONUTF8=0``, ``PYTHONIOENCODING=ascii``)."""
    return _writes_utf8(sys.stdout)


def tolerant_output() -> None:
    """Let stdout show what its encoding cannot write as ``\\u2713``, as stderr already does.

    What the commands print for a person (``show``, ``diff``, ``replay``'s lines, the help) holds
    captured text and marks such as ``✓`` and ``…``: in a locale that is not UTF-8 the first one
    ended the command in a ``UnicodeEncodeError`` traceback. Output meant as data (``export``)
    is written as UTF-8 bytes instead, as ``-o FILE`` writes it.
    """
    if not utf8_output() and isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


def table(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None = None) -> list[str]:
    """Lay out ``rows`` as aligned lines no wider than ``width`` terminal columns.

    Cells are escaped here, so callers pass captured text as it is. Optional columns are left
    out when even narrowed flexible columns would not fit; the flexible columns then take
    whatever width the others leave (the last gives way first) and truncate their cells. The last
    column is never padded.

    Args:
        columns: the column descriptions.
        rows: one sequence of cell texts per row.
        width: the terminal width (default: ``output_width()``).
    """
    if width is None:
        width = output_width()
    cells = [[safe(c) for c in row] for row in rows]
    for i, col in enumerate(columns):
        if col.max_width is not None:
            for row in cells:
                row[i] = truncate(row[i], col.max_width)
    widths = [max([display_width(c.title)] + [display_width(r[i]) for r in cells]) for i, c in enumerate(columns)]
    keep = list(range(len(columns)))

    def needed() -> int:
        fixed = sum(columns[i].min_width if columns[i].flexible else widths[i] for i in keep)
        return fixed + 2 * (len(keep) - 1)

    for level in sorted({c.optional for c in columns if c.optional}):
        if needed() <= width:
            break
        keep = [i for i in keep if columns[i].optional != level]
    columns = [columns[i] for i in keep]
    widths = [widths[i] for i in keep]
    cells = [[row[i] for i in keep] for row in cells]
    titles = [c.title for c in columns]
    gaps = 2 * (len(columns) - 1)
    total = sum(widths) + gaps
    for i in reversed(range(len(columns))):
        if columns[i].flexible and total > width:
            cut = max(0, min(widths[i] - columns[i].min_width, total - width))
            widths[i] -= cut
            total -= cut
    lines = []
    for row in [titles, *cells]:
        parts = []
        for i, (col, text) in enumerate(zip(columns, row)):
            text = truncate(text, widths[i])
            last = i == len(columns) - 1
            parts.append(text if last and col.align == "<" else _pad(text, widths[i], col.align))
        # Past the point where columns can go or shrink, the line itself is cut: it never wraps.
        lines.append(truncate("  ".join(parts).rstrip(), width))
    return lines


def hex_preview(data: bytes, limit: int = 64) -> list[str]:
    """The first ``limit`` bytes of ``data`` as ``hexdump -C``-like lines (printable ASCII at right)."""
    lines = []
    chunk = data[:limit]
    for offset in range(0, len(chunk), 16):
        row = chunk[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in row)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in row)
        lines.append(f"{offset:08x}  {hexes:<47}  |{text}|")
    return lines


def err(message: str, stream: TextIO | None = None) -> None:
    """Print one ``devtunnel: message`` line on stderr, escaped (it may quote the network)."""
    print(f"devtunnel: {safe(message)}", file=stream or sys.stderr)


class EscapingFormatter(logging.Formatter):
    """Log lines carry text from the network (a relay's refusal reason, a client's request):
    anything that could drive the terminal is escaped. A message stays one line (a newline in it
    shows as ``\\n``: a relay's reason cannot print a line of its own, such as a forged
    ``Forwarding`` line); the newlines of a traceback after it are kept."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record), keep="\t")

    def format(self, record: logging.LogRecord) -> str:
        # The message holds no newline now: the first one starts the traceback (or stack).
        line, newline, rest = super().format(record).partition("\n")
        return line + newline + escape(rest, keep="\n\t") if newline else line


def note_readable_secret(program: str, flag: str, path: str, holds: str) -> None:
    """Say on stderr, not refuse, that other users can read the file ``flag`` names (``holds``:
    what its secret does): on a shared machine they could use it; a container's secret mount is
    often readable by all (0444) with no other user to read it."""
    from devtunnel.config.source import shared_mode

    mode = shared_mode(Path(path).expanduser())
    if mode is not None:
        print(safe(f"{program}: note: {flag} {path} can be read by other users (mode {mode:03o}), and {holds}:"
                   f" chmod 600 {path} where other users log in"), file=sys.stderr)


def escape_tracebacks() -> None:
    """Print the traceback of an exception nothing caught (a bug) escaped, as the log's are.

    Its message may quote what came from the network (a header, a relay's reason): Python's own
    hooks write it to the terminal as it is. The lines of the traceback stay lines.
    """

    def on_main(kind: type[BaseException], exc: BaseException, tb: object) -> None:
        sys.stderr.write(traceback_text(exc))
        sys.stderr.flush()

    def on_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return  # as threading's own hook: a thread ending with sys.exit() says nothing
        name = args.thread.name if args.thread is not None else threading.get_ident()
        sys.stderr.write(f"Exception in thread {safe(str(name))}:\n{traceback_text(args.exc_value)}")
        sys.stderr.flush()

    sys.excepthook = on_main
    threading.excepthook = on_thread
