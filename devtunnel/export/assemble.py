"""Captured messages as HTTP/1.1 bytes: the one assembler behind raw exports and the agent API.

A capture keeps bodies de-chunked and, for requests, without the hop-by-hop fields the relay
removed on the way in (a chunked request arrives with neither Transfer-Encoding nor
Content-Length). The assembler frames the body again so that the bytes form one valid message
a real HTTP parser reads back with the same body:

* ``Transfer-Encoding: chunked`` in the head: the body is chunked again;
* ``Content-Length`` in the head: the body follows as it is;
* neither, in a request with a body: it came chunked (an HTTP/1.1 request has no other way to
  carry a body without a length), so ``Transfer-Encoding: chunked`` is put back and the body
  chunked;
* neither, in a response: the body runs to the end of the connection, as it did.

A body cut at the store's body cap is written as the part that was recorded, framed as that
many bytes (each ``Content-Length`` says the recorded size; a chunked body ends after it), with
a ``Devtunnel-Note: body truncated: N of M bytes were recorded`` field last in the head: a head
announcing the real size over fewer bytes is no message at all (a reader waits for bytes that
never come, or takes the next message for the rest of this body). The note is the one every
exporter gives a cut body (``export.base.truncation_note``).
"""

from __future__ import annotations

import http
from dataclasses import dataclass

from devtunnel.capture.model import Request, Response, wire_bytes
from devtunnel.export.base import truncation_note
from devtunnel.values.http1 import chunked, has_field, is_chunked

__all__ = ["NOTE_FIELD", "Message", "assemble_request", "assemble_response", "reason_of", "request_bytes", "response_bytes"]

NOTE_FIELD = b"Devtunnel-Note"
"""The field an assembled message gets when it is not the message as it was: its body was cut."""


@dataclass(frozen=True)
class Message:
    """One message split where a reader wants it: its ``start`` line and ``fields`` as framed
    (``head``: both through the blank line) and ``body`` as framed."""

    start: bytes
    fields: tuple[tuple[bytes, bytes], ...]
    body: bytes

    @property
    def head(self) -> bytes:
        return b"".join([self.start, b"\r\n", *(n + b": " + v + b"\r\n" for n, v in self.fields), b"\r\n"])

    def breaks_inside(self) -> bool:
        """Whether CR or LF is inside its start line or a field (a record made before the agent
        refused them may hold one): the head's bytes then hold a line it never had."""
        return any(b"\r" in part or b"\n" in part for part in (self.start, *(p for f in self.fields for p in f)))

    def __bytes__(self) -> bytes:
        return self.head + self.body


def _framed(message: Request | Response, *, request: bool) -> tuple[list[tuple[bytes, bytes]], bytes]:
    fields, body, body_size = list(message.headers.fields), message.body, message.body_size
    if message.body_truncated:
        recorded = str(len(body)).encode()
        fields = [(n, recorded if n.lower() == b"content-length" else v) for n, v in fields]
        fields.append((NOTE_FIELD, truncation_note(body, body_size).encode()))
    if is_chunked(fields):
        return fields, chunked(body)
    if has_field(fields, b"content-length"):
        return fields, body
    if request and (body or body_size):
        return [*fields, (b"Transfer-Encoding", b"chunked")], chunked(body)
    return fields, body


def assemble_request(request: Request) -> Message:
    """The request line, headers in order with their case, and the body framed as on the wire."""
    fields, body = _framed(request, request=True)
    start = wire_bytes(request.method) + b" " + request.target + b" HTTP/" + request.http_version.encode()
    return Message(start, tuple(fields), body)


def reason_of(response: Response) -> str:
    """The captured reason phrase, or the standard one when none was captured (``""`` if unknown)."""
    if response.reason:
        return response.reason
    try:
        return http.HTTPStatus(response.status).phrase
    except ValueError:
        return ""


def assemble_response(response: Response) -> Message:
    """The status line, headers in order with their case, and the body framed as on the wire."""
    fields, body = _framed(response, request=False)
    # The reason as the bytes it stands for: an edited one above U+00FF as UTF-8, not "?".
    start = f"HTTP/{response.http_version} {response.status} ".encode() + wire_bytes(reason_of(response))
    return Message(start.rstrip(), tuple(fields), body)


def request_bytes(request: Request) -> bytes:
    """The whole request as HTTP/1.1 bytes."""
    return bytes(assemble_request(request))


def response_bytes(response: Response) -> bytes:
    """The whole response as HTTP/1.1 bytes."""
    return bytes(assemble_response(response))
