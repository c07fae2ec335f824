"""Export requests as curl commands that send the captured request again, byte for byte.

Each exchange becomes one POSIX shell command. What curl would add on its own is switched
off (``-H 'Accept:'``, ``-H 'User-Agent:'``, ``-H 'Content-Type:'``, ``-H 'Expect:'``,
``-H 'Host:'`` when the original lacked them), the body goes through ``--data-binary``
(``-d`` would strip newlines) and ``--compressed`` is never used (it adds Accept-Encoding).
The framing is curl's: Content-Length and Transfer-Encoding are left out and curl counts the
body it sends, so a command whose body is edited still sends a valid request.

Every argument is quoted with ``export.base.shell_word``: POSIX single quotes, or ANSI-C
quotes (``$'a\\tb'``, read by bash and zsh) for a value holding a tab, so the printed command
shows no raw control character. Bytes a pasted command cannot carry (NUL, non-UTF-8, other
control characters, a body over ``inline_limit``) go to side files:

* a body: ``--data-binary @DIR/ID.body``;
* a header line: ``-H @DIR/ID.headerN.txt`` (curl reads header lines from a file, in place);
* a request target: ``-K DIR/ID.target.curlrc``, a curl config file that sets
  ``request-target``.

Sent to the public URL, the headers the relay added on the way in (its X-Forwarded-For entry,
X-Forwarded-Proto, -Host and -Port, Forwarded, X-Real-IP) are left out: the relay adds them again
(``export.base.sent_fields``).

A target curl would rewrite (dot segments, spaces, glob characters, non-ASCII) is sent with
``--request-target``. One thing curl cannot reproduce: it always sends ``Host`` first and
spells it ``Host``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import SplitResult, urlsplit

from devtunnel.capture.model import Exchange, Request
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
from devtunnel.values.http1 import FRAMING, has_field, is_token
from devtunnel.values.terminal import quoted

__all__ = ["curl_pieces", "export_curl", "INLINE_LIMIT"]

INLINE_LIMIT = 64 * 1024
"""Bodies larger than this many bytes go to a side file even when they are printable text."""

# Characters curl keeps unchanged in a URL path and query (checked against curl 7.88).
_PLAIN_TARGET_RE = re.compile(rb"^/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*$")
_CONTINUATION = " \\\n  "


def _is_plain(target: bytes) -> bool:
    """True when curl sends ``target`` exactly as given in a URL."""
    if not _PLAIN_TARGET_RE.match(target):
        return False
    path = target.split(b"?", 1)[0]
    # curl removes dot segments unless told not to; such targets go via --request-target.
    return not any(seg in (b".", b"..") for seg in path.split(b"/"))


def _checked_url(url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ExportError(f"{quoted(url)} is not an http:// or https:// URL")
    if safe_text(url.encode("utf-8", "surrogatepass"), allow="") is None:
        raise ExportError(f"{quoted(url)} contains control characters")
    return parts


def _config_string(raw: bytes) -> bytes:
    """``raw`` as a double-quoted curl config value (only backslash and quote are special)."""
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class _Command:
    """Collects the quoted words of one command and its side files."""

    def __init__(self, stem: str, body_dir: str, files: dict[str, bytes]) -> None:
        self.words: list[str] = ["curl"]
        self.options: list[str] = []
        self.stem = stem
        self.body_dir = body_dir
        self.files = files

    def side_file(self, suffix: str, content: bytes) -> str:
        path = posixpath.join(self.body_dir, f"{self.stem}{suffix}")
        self.files[path] = content
        return path

    def option(self, flag: str, value: str, *, keep: str = "") -> None:
        self.options.append(f"{flag} {shell_word(value, keep=keep)}")

    def text(self) -> str:
        return _CONTINUATION.join([" ".join(self.words), *self.options])


def _sends_body(request: Request) -> bool:
    """True when the command gives a body: the request had one, or said Content-Length: 0 (not HEAD,
    which curl sends with ``--head`` so it does not wait for the body a HEAD answer announces)."""
    if request.body:
        return True
    return request.method != "HEAD" and has_field(request.headers.fields, b"content-length")


def _add_target(cmd: _Command, exchange: Exchange, url: str | None, where: Destination | None) -> None:
    request = exchange.request
    if url is not None:
        _checked_url(url)
        full_url = url
    else:
        assert where is not None  # given whenever url is not
        scheme, netloc, prefix = where.scheme, where.netloc, where.prefix
        target = request.target
        if b"\r" in target or b"\n" in target or b"\x00" in target:
            raise ExportError(f"exchange {exchange.id}: the request target holds CR, LF or NUL; curl cannot send it")
        if target.startswith(b"/"):
            target = prefix.encode("utf-8") + target
        if _is_plain(target):
            full_url = f"{scheme}://{netloc}{target.decode('ascii')}"
        else:
            full_url = f"{scheme}://{netloc}/"
            readable = safe_text(target, allow="")
            if readable is not None:
                cmd.option("--request-target", readable)
            else:
                config = b"request-target = " + _config_string(target) + b"\n"
                cmd.option("-K", cmd.side_file(".target.curlrc", config))
    if any(ch in full_url for ch in "[]{}"):
        cmd.words.append("--globoff")  # an IPv6 host would otherwise be read as a glob range
    cmd.words.append(shell_word(full_url))


def _add_method(cmd: _Command, request: Request) -> None:
    method = request.method
    if not is_token(method):
        raise ExportError(f"method {quoted(method)} is not an HTTP token; curl cannot send it")
    if _sends_body(request):
        if method != "POST":  # --data-binary makes curl POST
            cmd.words += ["-X", shell_word(method)]
    elif method == "HEAD":
        cmd.words.append("--head")
    elif method != "GET":
        cmd.words += ["-X", shell_word(method)]


def _add_headers(cmd: _Command, exchange: Exchange, where: Destination | None) -> None:
    request = exchange.request
    present: set[bytes] = set()
    for index, (name, value) in enumerate(sent_fields(exchange, where)):
        lower = name.lower()
        present.add(lower)
        if not is_token(name):
            raise ExportError(f"exchange {exchange.id}: header name {quoted(name)} is not an HTTP token; curl cannot send it")
        if any(b in value for b in b"\r\n\x00"):
            raise ExportError(f"exchange {exchange.id}: header {quoted(name)} holds CR, LF or NUL; curl cannot send it")
        if lower in FRAMING:
            continue  # curl frames the body it sends, so an edited body stays a valid request
        # "Name;" is curl's spelling of a header with an empty value ("Name:" would remove it).
        line = name + b";" if not value else name + b": " + value
        text = safe_text(line)
        if text is not None:
            cmd.option("-H", text)
        else:
            cmd.option("-H", "@" + cmd.side_file(f".header{index + 1}.txt", line + b"\n"))
    # Headers curl adds by itself unless told not to.
    defaults = [b"Host", b"Accept", b"User-Agent"]
    if _sends_body(request):
        defaults += [b"Content-Type", b"Expect"]
    for name in defaults:
        if name.lower() not in present:
            cmd.option("-H", name.decode() + ":")


def _add_body(cmd: _Command, request: Request, inline_limit: int) -> None:
    body = request.body
    if not body:
        if _sends_body(request):
            cmd.option("--data-binary", "")  # curl then sends Content-Length: 0, as the original did
        return
    text = None
    if len(body) <= inline_limit and not body.startswith(b"@"):  # a leading @ means "read a file"
        text = safe_text(body, allow="\t\n")
    if text is not None:
        cmd.option("--data-binary", text, keep="\n")  # a multi-line body stays multi-line
    else:
        cmd.option("--data-binary", "@" + cmd.side_file(".body", body))


def curl_command(
    exchange: Exchange,
    *,
    index: int = 0,
    url: str | None = None,
    base_url: str | None = None,
    local: bool = False,
    body_dir: str = ".",
    inline_limit: int = INLINE_LIMIT,
    files: dict[str, bytes] | None = None,
) -> str:
    """The curl command for one exchange, redacted already if it is to be (side files are added to ``files``)."""
    if exchange.websocket:
        raise refuse_websocket(exchange, "curl")
    cmd = _Command(file_stem(exchange, index), body_dir, {} if files is None else files)
    request = exchange.request
    version = "--http1.0" if request.http_version == "1.0" else "--http1.1"
    cmd.words.append(version)
    _add_method(cmd, request)
    where = None if url is not None else destination(exchange, base_url=base_url, local=local)
    _add_target(cmd, exchange, url, where)
    _add_headers(cmd, exchange, where)
    _add_body(cmd, request, inline_limit)
    text = cmd.text()
    if request.body_truncated:
        text = (
            f"# {truncation_note(request.body, request.body_size)}, this command sends only those\n" + text
        )
    return text


def curl_pieces(
    exchanges: Iterable[Exchange],
    *,
    redact: bool = False,
    url: str | None = None,
    base_url: str | None = None,
    local: bool = False,
    body_dir: str = ".",
    inline_limit: int = INLINE_LIMIT,
) -> Iterator[Export]:
    """The text of :func:`export_curl` a command at a time, each with its side files: the
    exchanges are read and made commands one by one, so a million are never in memory.

    Raises:
        ExportError: as ``export_curl``, the exchange it cannot express after the pieces before it.
    """
    items = each_prepared(exchanges, redact=redact)
    if sum(x is not None and x is not False for x in (url, base_url, local)) > 1:
        raise ExportError("give one of url=, base_url= or local=True, not several")
    for i, ex in enumerate(items):
        files: dict[str, bytes] = {}
        text = curl_command(ex, index=i, url=url, base_url=base_url, local=local, body_dir=body_dir,
                            inline_limit=inline_limit, files=files)
        yield Export(text if i == 0 else "\n\n" + text, files)
    yield Export("\n")


def export_curl(
    exchanges: Sequence[Exchange],
    *,
    redact: bool = False,
    url: str | None = None,
    base_url: str | None = None,
    local: bool = False,
    body_dir: str = ".",
    inline_limit: int = INLINE_LIMIT,
) -> Export:
    """One curl command per exchange, separated by blank lines.

    Args:
        exchanges: the exchanges to export, in order.
        redact: replace credentials, signatures and secret fields with ``<redacted>``.
        url: send every request to exactly this URL (its path replaces the captured target).
        base_url: send to this ``scheme://host[:port][/prefix]`` with the captured target
            appended instead of the public URL.
        local: send each request to the local service it was forwarded to.
        body_dir: directory the side files are referred to in (``.`` by default).
        inline_limit: bodies over this many bytes go to a side file.
    """
    return joined(curl_pieces(exchanges, redact=redact, url=url, base_url=base_url, local=local,
                              body_dir=body_dir, inline_limit=inline_limit))
