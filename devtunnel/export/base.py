"""What every exporter shares: the ``Export`` result, the safe-text test, and where a request is sent.

Captured bytes are hostile. An exporter puts them inline in its text only when they are valid
UTF-8 that ``values.terminal`` shows as it is: no control or format character (which could
rewrite a terminal line, hide text with bidi overrides, or be turned into a newline by a
terminal's line discipline), no line separator, no letter that draws as nothing; anything else
goes into a side file in ``Export.files``.

A command sent to the public URL (``Destination.public``) leaves out what the relay added to the
request on its way in (``sent_fields``), since the relay adds it again: a replayed request would
carry the client's address in X-Forwarded-For twice. Sent to the local service or another base
URL, the request keeps them, as the service got it.

Shell commands (curl, HTTPie) quote every argument with :func:`shell_word`: POSIX single quotes
for text the terminal shows as it is, ANSI-C quotes (``$'a\\tb'``) for text holding a character
the terminal rule escapes (a tab, the one control let inline), so the printed command holds no raw control
character and bash or zsh still pass the exact bytes.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from devtunnel.capture.model import Exchange
from devtunnel.errors import ExportError
from devtunnel.values.http1 import RELAY_SET, Field
from devtunnel.export.redact import redact_exchange
from devtunnel.values.relay_url import quoted_url
from devtunnel.values.terminal import escape, needs_escape

__all__ = [
    "PUBLIC_SCHEMES",
    "Export",
    "Exporter",
    "Pieces",
    "Destination",
    "safe_text",
    "shell_word",
    "file_stem",
    "base_url_parts",
    "destination",
    "each_prepared",
    "joined",
    "prepared",
    "require_exchanges",
    "sent_fields",
    "truncation_note",
    "without_relay_fields",
]

"""An HTTP token (RFC 9110 section 5.6.2): what a header name or method may be."""


@dataclass(frozen=True)
class Export:
    """The result of an export.

    Attributes:
        text: the output, safe to print to a terminal.
        files: side files the text refers to, keyed by the path exactly as the text spells it
            (relative to the directory the text is used in, unless absolute). Nothing is written
            by the exporter: the caller writes these before running the text.
    """

    text: str
    files: dict[str, bytes] = field(default_factory=dict)


Exporter = Callable[..., Export]
"""``exporter(exchanges: Sequence[Exchange], **options) -> Export``."""

Pieces = Callable[..., Iterator[Export]]
"""``pieces(exchanges: Iterable[Exchange], **options) -> Iterator[Export]``: an exporter's output a
piece at a time (a command, a test, a HAR entry), each with the side files its text names; joined,
the pieces are what the exporter returns (``joined``)."""


def safe_text(raw: bytes, *, allow: str = "\t") -> str | None:
    """``raw`` as text if it can be shown and pasted as is, else None.

    Args:
        raw: captured bytes.
        allow: control characters tolerated (tab by default; add ``"\\n"`` for bodies).

    Returns:
        The UTF-8 text, or None when ``raw`` is not UTF-8 or holds a character outside ``allow``
        that ``values.terminal`` shows as an escape (a control, format, surrogate, private-use or
        unassigned character, a line or paragraph separator, a letter that draws as nothing).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.isascii():
        # Fast path for the common case: printable ASCII plus the allowed controls.
        if all(" " <= ch < "\x7f" or ch in allow for ch in text):
            return text
        return None
    for ch in text:
        if ch not in allow and needs_escape(ch):  # the terminal's rule: one for every output
            return None
    return text


_ANSI_C_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\", "'": "\\'"}


def shell_word(text: str, *, keep: str = "") -> str:
    """``text`` as one shell word that bash and zsh read back as exactly ``text``, with nothing a
    terminal would act on or hide.

    Text ``values.terminal`` shows as it is gets POSIX single quotes (``shlex.quote``). Text with
    a character that rule escapes (a tab, a control, a bidi override ...) is written in ANSI-C
    quotes, ``$'...'`` (bash, zsh, ksh; not dash), with each such character as ``\\t``, ``\\r``,
    ``\\n`` or the ``\\xNN`` of its UTF-8 bytes, so the shell makes the same bytes in any locale.
    A raw tab is what breaks a printed command: copied from the screen it becomes spaces, and
    pasted into an interactive shell it asks for completion.

    Args:
        text: the argument; a byte that was not UTF-8 may be carried as a ``surrogateescape``
            surrogate and is written ``\\xNN``.
        keep: characters among ``"\\n"`` left as they are (a multi-line body stays multi-line).

    Raises:
        ValueError: ``text`` holds NUL, which no shell argument can carry.
    """
    if escape(text, keep=keep, double_backslash=False) == text:
        return shlex.quote(text)
    if "\x00" in text:
        raise ValueError("a shell argument cannot hold NUL")
    out: list[str] = []
    for ch in text:
        if ch in keep:
            out.append(ch)
        elif ch in _ANSI_C_NAMED:
            out.append(_ANSI_C_NAMED[ch])
        elif needs_escape(ch):
            # A byte that was not UTF-8 comes back as itself; another lone surrogate as its 3 bytes.
            raw = ch.encode("utf-8", "surrogateescape" if "\udc80" <= ch <= "\udcff" else "surrogatepass")
            out.extend(f"\\x{b:02x}" for b in raw)
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


_STEM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def file_stem(exchange: Exchange, index: int) -> str:
    """A file-name-safe stem for an exchange's side files (its id when that is safe)."""
    if _STEM_RE.match(exchange.id):
        return exchange.id
    return f"exchange-{index + 1}"


def truncation_note(body: bytes, size: int) -> str:
    """What every format says of a body cut at the store's body cap (``body`` is the recorded part,
    ``size`` the real one): a comment before a command, a HAR ``comment``, a raw message's
    ``Devtunnel-Note``. Each gives only the recorded bytes and frames them as what it gives."""
    return f"body truncated: {len(body)} of {size} bytes were recorded"


def require_exchanges(exchanges: Sequence[Exchange]) -> None:
    """Raise ``ExportError`` when there is nothing to export."""
    if not exchanges:
        raise ExportError("nothing to export: no exchanges given")


def refuse_websocket(exchange: Exchange, tool: str) -> ExportError:
    """The refusal of a WebSocket session by a format that sends one plain request (curl, HTTPie),
    saying what to do instead: a filter matching many exchanges often takes in one."""
    return ExportError(f"exchange {exchange.id} is a WebSocket session; {tool} cannot replay it "
                       "(the har and raw formats keep it; a filter leaves such sessions out with !ws)")


def each_prepared(exchanges: Iterable[Exchange], *, redact: bool) -> Iterator[Exchange]:
    """``prepared`` one at a time, for an export written as it is read: the exchanges, secrets
    replaced when ``redact``. Raises at once (not at the first ``next``) when there are none."""
    items = iter(exchanges)
    first = next(items, None)
    if first is None:
        require_exchanges([])
    assert first is not None  # require_exchanges raised
    chained: Iterator[Exchange] = itertools.chain([first], items)
    return (redact_exchange(ex) for ex in chained) if redact else chained


def joined(pieces: Iterable[Export]) -> Export:
    """The pieces of an export written as it is read, as one ``Export``: the same text and side
    files the writer of the pieces would leave (what the exporters return whole)."""
    text: list[str] = []
    files: dict[str, bytes] = {}
    for piece in pieces:
        text.append(piece.text)
        files.update(piece.files)
    return Export("".join(text), files)


def prepared(exchanges: Sequence[Exchange], *, redact: bool) -> list[Exchange]:
    """The exchanges to export, secrets replaced when ``redact`` (raises when there are none)."""
    require_exchanges(exchanges)
    return [redact_exchange(ex) for ex in exchanges] if redact else list(exchanges)


PUBLIC_SCHEMES = ("http", "https")
"""The schemes an exchange's public URL may have; with another (a capture of an older agent
behind a hostile relay: ``https://elsewhere/#``) it has none, as without a Host."""

_AUTHORITY_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?$")


@dataclass(frozen=True)
class Destination:
    """Where a command sends a request: ``scheme://netloc`` and a path put before the target;
    ``public`` when that is the exchange's public URL (through the relay again)."""

    scheme: str
    netloc: str
    prefix: str = ""
    public: bool = False

    def url(self, target: str) -> str:
        """The URL for a request ``target`` (origin-form, or anything else put after a ``/``)."""
        path = target if target.startswith("/") else "/" + target
        return f"{self.scheme}://{self.netloc}{self.prefix}{path}"


def base_url_parts(url: str) -> SplitResult:
    """``url`` checked as a base URL to send to: ``http(s)://host[:port][/prefix]``.

    Raises:
        ExportError: another scheme, no host, a bad port, user info, a query or fragment, or
            control characters (the message says which).
    """
    shown = quoted_url(url)
    if safe_text(url.encode("utf-8", "surrogatepass"), allow="") is None or " " in url:
        raise ExportError(f"{shown} contains spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ExportError(f"{shown} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExportError(f"{shown} is not an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ExportError(f"{shown} holds user info: give credentials as headers, not in the URL")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ExportError(f"{shown} has a query or fragment: give a base URL (scheme://host[:port][/prefix])")
    return parts


def destination(exchange: Exchange, *, base_url: str | None = None, local: bool = False) -> Destination:
    """Where to send ``exchange``: ``base_url``, its local service (``local``) or its public URL.

    The public URL is the exchange's scheme and Host header; without a usable Host it falls
    back to the local service the exchange was forwarded to.

    Raises:
        ExportError: a bad ``base_url``, both ``base_url`` and ``local``, or no URL to use.
    """
    if base_url is not None and local:
        raise ExportError("give base_url= or local=True, not both")
    if base_url is None and local:
        if not exchange.target_url:
            raise ExportError(f"exchange {exchange.id} has no local service URL; pass base_url= to say where to send it")
        base_url = exchange.target_url
    if base_url is None:
        host = exchange.request.host
        if host and exchange.scheme in PUBLIC_SCHEMES and _AUTHORITY_RE.match(host):
            return Destination(exchange.scheme, host, public=True)
        if not exchange.target_url:
            raise ExportError(
                f"exchange {exchange.id} has no usable Host header or target URL; pass base_url= to say where to send it"
            )
        base_url = exchange.target_url
    parts = base_url_parts(base_url)
    return Destination(parts.scheme, parts.netloc, parts.path.rstrip("/"))


_XFF = b"x-forwarded-for"


def without_relay_fields(fields: Sequence[Field]) -> list[Field]:
    """``fields`` as the public client sent them: less what the relay added on the way in.

    The inverse of the relay's rule (``relay.headers.forward_request_headers``, checked against
    it in the tests): the relay drops a client's own X-Forwarded-Proto, X-Forwarded-Host,
    X-Forwarded-Port, Forwarded and X-Real-IP (``RELAY_SET``) and sets its own, so every one
    captured is the relay's; it appends the client's address to the last X-Forwarded-For as
    ``", ADDRESS"``, or adds an X-Forwarded-For holding only it. The client's own X-Forwarded-For
    entries stay. (A capture an older relay forwarded may hold a client's Forwarded or
    X-Real-IP: it goes too, and the relay sets its own when the command runs.)
    """
    out = [(name, value) for name, value in fields if name.lower() not in RELAY_SET]
    last = next((i for i in range(len(out) - 1, -1, -1) if out[i][0].lower() == _XFF), None)
    if last is not None:
        name, value = out[last]
        before, comma, _ = value.rpartition(b", ")
        if comma:
            out[last] = (name, before)
        else:
            del out[last]
    return out


def sent_fields(exchange: Exchange, where: Destination | None) -> list[Field]:
    """The header fields a command sends to ``where``: as captured, but to the public URL
    without what the relay added (``without_relay_fields``), which it adds again. ``None``: a
    URL given whole (curl's ``url=``), not the public one."""
    fields = exchange.request.headers.fields
    return without_relay_fields(fields) if where is not None and where.public else list(fields)
