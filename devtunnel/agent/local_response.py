"""The local service's HTTP/1 response, read with ``httptools``.

``LocalResponse`` collects one response from the bytes the local service sends: the status,
the headers as they came (their values without the whitespace around them), the body as it is
parsed, and whether the connection can be used again. Interim (1xx) responses are skipped, and so are the trailer fields of a chunked
body (the tunnel carries none: they never become headers). The forwarder (``forward.py``) and its quick
path (``quick.py``) feed it and send what it parsed on through the tunnel stream.
"""

from __future__ import annotations

import re

import httptools

from devtunnel.protocol.frames import FIELD, RESPONSE_PREFIX
from devtunnel.protocol.handshake import DEFAULT_MAX_HEAD_SIZE
from devtunnel.values.http1 import content_length_digits, field_lines_problem, field_value, other_coding

__all__ = ["LocalResponse", "BadResponse", "NO_BODY_STATUSES", "MAX_HEAD", "what_it_sent"]

MAX_HEAD = DEFAULT_MAX_HEAD_SIZE
"""The largest response head the relay takes, as the tunnel's wire encodes it (what a relay
announces unless told otherwise)."""
_FIELD_SIZE = FIELD.size
_PREFIX_SIZE = RESPONSE_PREFIX.size + 3  # and the version, "1.1"

NO_BODY_STATUSES = frozenset((204, 304))
"""Statuses whose responses never have a body."""
_HEAD_END = re.compile(rb"\n\r?\n")
# The empty line that ends a response head, after a CRLF or a bare LF (the parser takes both).


class BadResponse(Exception):
    """The local service sent something that is not a valid HTTP/1.x response."""


class _HeadTooLarge(Exception):
    """Raised inside the parser: a whole head larger than the tunnel carries (``MAX_HEAD``)."""


class _OtherCoding(Exception):
    """Raised inside the parser: a transfer coding other than chunked (``Transfer-Encoding:
    gzip, chunked``), which the tunnel cannot carry: the relay frames the body itself and
    names no coding, so the client would take the coded bytes for the body."""


class _HeadDone(Exception):
    """Raised inside the parser to stop after the head of a response to HEAD, or before bytes
    that follow a complete response (they are not parsed into it)."""


def _announces_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a head declares a body: a Transfer-Encoding, or a Content-Length other than 0."""
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            return True
        if lower == b"content-length":
            digits = content_length_digits(value)
            if digits is None or digits.lstrip(b"0"):
                return True
    return False


class LocalResponse:
    """``httptools`` callbacks collecting one response (1xx interim responses and trailer fields are skipped)."""

    __slots__ = ("parser", "head_only", "status", "reason", "headers", "version", "head_done", "complete", "framed",
                 "extra", "stray", "keep_alive", "body", "_interim", "_interims", "_raw")

    def __init__(self, head_only: bool) -> None:
        self.parser = _parser(self)
        self.head_only = head_only
        self.status = 0
        self.reason = bytearray()
        self.headers: list[tuple[bytes, bytes]] = []
        self.version = "1.1"
        self.head_done = False
        self.complete = False
        self.framed = False
        """The body length is known (Content-Length or chunked), so EOF before its end is an error."""
        self.extra = False
        """Bytes followed the response, or a 204 or 304 announced a body it cannot have: the
        connection cannot be reused."""
        self.stray = 0
        """The Content-Length of a 304, which has no body (it is the length the 200 would have
        had, RFC 9110 8.6): the connection is used again, and that many bytes the service may
        still write anyway are dropped before the next response (``LocalConnection.expect_stray``)."""
        self.keep_alive = False
        """The local service keeps the connection open after this response."""
        self.body: list[bytes] = []
        self._interim = False
        self._interims = 0  # interim heads before the final one
        self._raw = bytearray()
        """The bytes of a response to HEAD fed so far: whether any follow its head is read in them."""

    def again(self, head_only: bool) -> LocalResponse:
        """This object, emptied for the next response on the same connection; returns it.

        Only after a response that ended cleanly with the connection kept alive (``complete``,
        ``keep_alive``, not ``extra``): llhttp then waits for the next message in the state a
        new parser starts in, and making one costs more than the rest of a small response's
        parsing. Whoever had the last response keeps only copies of its head and body.
        """
        assert self.complete and self.keep_alive and not self.extra and not self._interim
        if self.head_only:  # llhttp stopped for good after the head of that response to HEAD
            self.parser = _parser(self)
        if head_only:
            self._raw.clear()
            self._interims = 0
        self.head_only = head_only
        self.status = 0
        self.reason.clear()
        self.headers.clear()
        self.version = "1.1"
        self.head_done = False
        self.complete = False
        self.framed = False
        self.stray = 0
        self.keep_alive = False
        self.body = []
        return self

    # httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.head_done:
            # A message after the response: not ours to parse (it would replace the response's
            # status, headers and body), and the connection cannot be used again.
            raise _HeadDone
        self.reason.clear()
        self.headers.clear()

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            # A trailer field of a chunked body: never one of the head's (RFC 9110 6.5.1), which
            # the tunnel carries alone (as nginx drops an upstream's trailer fields).
            return
        self.headers.append((name, field_value(value)))  # llhttp keeps the whitespace after a value

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True
            self._interims += 1
            return
        self.status = status
        self.version = self.parser.get_http_version()
        self.head_done = True
        size = _PREFIX_SIZE + len(self.reason)
        for name, value in self.headers:
            size += _FIELD_SIZE + len(name) + len(value)
            lower = name.lower()
            if lower == b"transfer-encoding":
                if other_coding(value):
                    raise _OtherCoding(value)
                self.framed = True
            elif lower == b"content-length":
                self.framed = True
        if size > MAX_HEAD:
            # Bytes that came in one read are not counted by the reader's bound on an unfinished
            # head; the tunnel's encoder would refuse this one.
            raise _HeadTooLarge(size)
        if self.framed and status in NO_BODY_STATUSES:
            self._no_body_framing(status)
        if self.head_only:
            self.keep_alive = self.parser.should_keep_alive()
            raise _HeadDone

    def _no_body_framing(self, status: int) -> None:
        """A 204 or 304 with a Content-Length or Transfer-Encoding: it has no body, whatever the
        head says (llhttp reads none, nor do h11 and nginx). A service that announced one may
        still write it, after the head and in a write of its own, where it would be read as the
        start of the next response: a 304's Content-Length alone is lawful (and says how many
        such bytes to drop, ``stray``); after anything else announcing a body the connection is
        not used again."""
        if status == 304 and not any(name.lower() == b"transfer-encoding" for name, _ in self.headers):
            for name, value in self.headers:
                if name.lower() == b"content-length":
                    digits = content_length_digits(value)
                    if digits is not None and len(digits) <= 18:
                        self.stray = int(digits)
                        return
        if _announces_body(self.headers):
            self.extra = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        # Asked here: once the message is complete, llhttp forgets the framing it was based on.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True

    # ---------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Parse received bytes. Raises ``BadResponse`` for invalid HTTP."""
        if self.head_only:
            self._raw += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadDone):
                # After the head of a response to HEAD (httptools cannot be told the request was
                # HEAD: this parser is done, ``again`` makes another), or before a message that
                # followed the response: we stop here. The connection is used again only when
                # no byte followed a HEAD response's head (bytes we did not parse would be read
                # as the next response).
                self.complete = True
                self.extra = not self.head_only or not _head_ends(self._raw, self._interims + 1)
                return
            context = exc.__context__
            if isinstance(context, _OtherCoding):
                raise BadResponse(f"the local service sent Transfer-Encoding: {context.args[0].decode('latin-1')}"
                                  " (only chunked goes through the tunnel)") from None
            if isinstance(context, _HeadTooLarge):
                raise BadResponse(f"the local service sent a response head of {context.args[0] >> 10} KiB"
                                  f" (at most {MAX_HEAD >> 10} KiB go through the tunnel)") from None
            raise self._invalid(exc, data) from exc
        except httptools.HttpParserUpgrade as exc:
            raise BadResponse("the local service switched protocols on a plain HTTP request") from exc
        except httptools.HttpParserError as exc:
            raise self._invalid(exc, data) from exc

    def _invalid(self, exc: Exception, data: bytes) -> BadResponse:
        """The error for bytes llhttp refused: the header field at fault when it is one (llhttp
        says "Invalid header value char", not which), else llhttp's words and what a service
        that is not HTTP at all sent. A field is judged by the rule every head the relay writes
        is (``values.http1.field_problem``)."""
        if not self.head_done:
            heads = _HEAD_END.split(data)  # an interim (1xx) head may come before the one at fault
            for n, head in enumerate(heads):
                if head.startswith(b"HTTP/"):
                    problem = field_lines_problem(head + b"\n" if n < len(heads) - 1 else head)
                    if problem is not None:
                        return BadResponse(f"the local service sent an invalid header: {problem}")
        return BadResponse(f"invalid HTTP response from the local service: {exc}{self._sent(data)}")

    def _sent(self, data: bytes) -> str:
        """What a service that is not HTTP at all sent (``SSH-2.0-OpenSSH_9.2``), for the message:
        its first line, up to 48 bytes, anything but printable ASCII as U+FFFD; "" once a status
        line was read."""
        return "" if self.status else what_it_sent(data)

    def take_body(self) -> bytes:
        """The body bytes parsed since the last call, joined."""
        body = self.body
        if not body:
            return b""
        self.body = []
        return body[0] if len(body) == 1 else b"".join(body)

    def eof(self) -> None:
        """The local service closed the connection. Raises ``BadResponse`` if that cut the body."""
        if self.head_done and not self.complete:
            if self.framed:
                raise BadResponse("the local service closed the connection in the middle of the response body")
            self.complete = True  # the body was delimited by the end of the connection


def what_it_sent(data: bytes) -> str:
    """`` (it sent SSH-2.0-OpenSSH_9.2)``: what a service that does not answer HTTP sent, for a
    message: its first line, up to 48 bytes, anything but printable ASCII as U+FFFD."""
    first = data[:48].split(b"\n", 1)[0].rstrip(b"\r")
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "\ufffd" for b in first)
    more = "…" if len(first) < len(data) else ""
    return f" (it sent {text}{more})"


def _parser(response: LocalResponse) -> httptools.HttpResponseParser:
    """A parser calling back ``response``."""
    parser = httptools.HttpResponseParser(response)
    # A line may end in LF alone (RFC 9112 2.2 lets a recipient take it): a hand-written
    # service (``printf ... | nc -l``) answers so, and curl, browsers and nginx take it. No one
    # reads these bytes after the agent: the relay writes the head anew from its fields.
    parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
    return parser


def _head_ends(raw: bytearray, heads: int) -> bool:
    """Whether the ``heads``-th response head in ``raw`` (interim ones counted) ends where ``raw``
    does: nothing follows it."""
    for end in _HEAD_END.finditer(raw):
        heads -= 1
        if not heads:
            return end.end() == len(raw)
    return False
