"""Export requests as HTTPie (``http``) command lines.

HTTPie is for reading and tweaking a request, not for byte-exact reproduction (use curl for
that): it sends HTTP/1.1 whatever the captured version (a comment line says so), frames the body itself (Content-Length and Transfer-Encoding are left out), may
normalise the URL, and sends header values as UTF-8. Headers HTTPie would add on its own are
switched off with ``Name:``; an empty value is written ``Name;``; a value starting with ``=``
or ``@`` is escaped so it is not read as another kind of item; ``--`` comes before the method
when a header name starts with ``-`` (the item ``-o:x`` would be read as the option ``-o``).
The body is given with ``--raw=TEXT`` when it is printable text, otherwise it is read from a
side file on standard input (``< DIR/ID.body``). Sent to the public URL, the headers the relay
added on the way in are left out, as curl's are (``export.base.sent_fields``).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import quote, urlsplit

from devtunnel.capture.model import Exchange
from devtunnel.errors import ExportError
from devtunnel.export.base import (
    Destination,
    Export,
    destination,
    each_prepared,
    file_stem,
    joined,
    refuse_websocket,
    safe_text,
    sent_fields,
    shell_word,
    truncation_note,
)
from devtunnel.export.curl import INLINE_LIMIT
from devtunnel.values.http1 import FRAMING, is_token
from devtunnel.values.terminal import escape, quoted
from devtunnel.values.urls import is_localhost_name

__all__ = ["export_httpie", "httpie_pieces"]

_METHOD_RE = re.compile(r"^[A-Za-z]+$")  # what HTTPie accepts as a METHOD argument
_ITEM_SPECIALS = ":;=@"  # HTTPie's request-item separator characters
_DEFAULTS = [b"Host", b"User-Agent", b"Accept", b"Accept-Encoding", b"Connection"]
_CONTINUATION = " \\\n  "


def _url(exchange: Exchange, where: Destination) -> str:
    target = exchange.request.target
    text = safe_text(target, allow="")
    if text is None or " " in text:
        # HTTPie cannot carry these bytes verbatim: percent-encode what is not printable ASCII.
        text = quote(target, safe="/?&=:;@!$'()*+,~%-._#[]{}|^`\"<>\\")
    return where.url(text)


def _header_item(exchange: Exchange, name: bytes, value: bytes) -> str:
    if not is_token(name):
        raise ExportError(f"exchange {exchange.id}: header name {quoted(name)} is not an HTTP token")
    text = safe_text(value)
    if text is None:
        raise ExportError(
            f"exchange {exchange.id}: header {name.decode('latin-1')} holds bytes HTTPie cannot send "
            "(non-UTF-8 or control characters); use the curl format"
        )
    if not text:
        return name.decode("ascii") + ";"
    if any(text[i] == "\\" and text[i + 1] in _ITEM_SPECIALS for i in range(len(text) - 1)):
        raise ExportError(
            f"exchange {exchange.id}: header {name.decode('ascii')} has a backslash before one of "
            f"{_ITEM_SPECIALS!r}, which HTTPie cannot express; use the curl format"
        )
    if text[0] in "=@":
        text = "\\" + text  # else ":=" would read JSON and ":@" a file
    return f"{name.decode('ascii')}:{text}"


def httpie_command(
    exchange: Exchange,
    *,
    index: int = 0,
    base_url: str | None = None,
    local: bool = False,
    body_dir: str = ".",
    files: dict[str, bytes] | None = None,
) -> str:
    """The ``http`` command for one exchange, redacted already if it is to be (side files are added to ``files``)."""
    files = {} if files is None else files
    request = exchange.request
    if exchange.websocket:
        raise refuse_websocket(exchange, "HTTPie")
    if not _METHOD_RE.match(request.method):
        raise ExportError(f"method {quoted(request.method)} cannot be given to HTTPie (letters only); use the curl format")
    where = destination(exchange, base_url=base_url, local=local)
    fields = sent_fields(exchange, where)
    words = ["http"]
    body_word = ""
    if request.body:
        text = safe_text(request.body, allow="\t\n") if len(request.body) <= INLINE_LIMIT else None
        if text is not None:
            words += ["--ignore-stdin", shell_word("--raw=" + text, keep="\n")]
        else:
            path = posixpath.join(body_dir, f"{file_stem(exchange, index)}.body")
            files[path] = request.body
            body_word = "< " + shell_word(path)
    else:
        words.append("--ignore-stdin")
    url = _url(exchange, where)
    if any(seg in (".", "..") for seg in urlsplit(url).path.split("/")):
        words.append("--path-as-is")
    items: list[str] = []
    present: set[bytes] = set()
    for name, value in fields:
        present.add(name.lower())
        if name.lower() in FRAMING:
            continue
        items.append(shell_word(_header_item(exchange, name, value)))
    if any(name.startswith(b"-") for name, _ in fields):
        words.append("--")  # else the item of a header named -o or -a is read as that option
    parts = urlsplit(url)
    prefix = f"http://{parts.netloc}"
    if url.startswith(prefix) and b"host" in present and is_localhost_name(parts.hostname or ""):
        # HTTPie asks the system resolver, which may not know *.localhost: loopback, Host kept.
        url = f"http://127.0.0.1{f':{parts.port}' if parts.port else ''}{url[len(prefix):]}"
    words += [shell_word(request.method), shell_word(url)]
    defaults = _DEFAULTS + ([b"Content-Type"] if request.body else [])
    items += [shell_word(n.decode() + ":") for n in defaults if n.lower() not in present]
    if body_word:
        items.append(body_word)
    text = _CONTINUATION.join([" ".join(words), *items])
    if request.body_truncated:
        text = f"# {truncation_note(request.body, request.body_size)}, this command sends only those\n" + text
    if request.http_version != "1.1":  # said, not dropped unseen: the other formats keep it
        # Escaped: a capture of an older devtunnel may hold any version a relay sent.
        text = (f"# captured as HTTP/{escape(request.http_version)}; HTTPie sends HTTP/1.1 (the curl format keeps"
                " the version)\n" + text)
    return text


def httpie_pieces(
    exchanges: Iterable[Exchange],
    *,
    redact: bool = False,
    base_url: str | None = None,
    local: bool = False,
    body_dir: str = ".",
) -> Iterator[Export]:
    """The text of :func:`export_httpie` a command at a time, each with its side files (the
    exchanges read one by one)."""
    for i, ex in enumerate(each_prepared(exchanges, redact=redact)):
        files: dict[str, bytes] = {}
        text = httpie_command(ex, index=i, base_url=base_url, local=local, body_dir=body_dir, files=files)
        yield Export(text if i == 0 else "\n\n" + text, files)
    yield Export("\n")


def export_httpie(
    exchanges: Sequence[Exchange],
    *,
    redact: bool = False,
    base_url: str | None = None,
    local: bool = False,
    body_dir: str = ".",
) -> Export:
    """One ``http`` command per exchange, separated by blank lines.

    Args:
        exchanges: the exchanges, in order.
        redact: replace credentials, signatures and secret fields with ``<redacted>``.
        base_url: send to this ``scheme://host[:port][/prefix]`` with the captured target
            appended instead of the public URL.
        local: send each request to the local service it was forwarded to.
        body_dir: directory the body side files are referred to in.
    """
    return joined(httpie_pieces(exchanges, redact=redact, base_url=base_url, local=local, body_dir=body_dir))
