"""How a captured body reads: decoded from its Content-Encoding, then taken as JSON, a form,
XML, text or binary.

:func:`readable_body` is the one rule behind the body the inspector shows (``tui.render``)
and the one ``devtunnel show`` prints: both decode the same codings within the same limit, say
the same notes, and judge the same bytes the same way.

A compressed body is hostile too: a few kilobytes of gzip can inflate to gigabytes, so it is
inflated at most to :data:`DECODE_LIMIT` bytes, and the notes say when it stopped there.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Literal

from devtunnel.capture.model import Request, Response
from devtunnel.values.sizes import format_size

__all__ = [
    "BodyKind",
    "CODINGS",
    "DECODE_LIMIT",
    "ReadableBody",
    "body_kind",
    "decode_content",
    "pretty_json",
    "readable_body",
]

BodyKind = Literal["empty", "json", "form", "xml", "text", "binary"]

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
CODINGS = tuple(_WBITS)
"""The Content-Encodings decoded for reading (br and zstd need libraries devtunnel does not bring)."""

DECODE_LIMIT = 32 * 1024 * 1024
"""Most bytes a compressed body is inflated to for reading (a small gzip can inflate to gigabytes)."""

_BINARY_TYPES = ("image/", "audio/", "video/", "font/")
_BINARY_EXACT = {
    "application/octet-stream",
    "application/pdf",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/x-protobuf",
    "application/protobuf",
    "application/grpc",
    "application/wasm",
    "application/msgpack",
    "application/x-msgpack",
    "application/cbor",
}


def body_kind(content_type: str, body: bytes) -> BodyKind:
    """How to show a body: by its media type first, then by what the bytes look like."""
    if not body:
        return "empty"
    ctype = content_type.lower()
    if ctype.startswith(_BINARY_TYPES) and not ctype.startswith("image/svg"):
        return "binary"
    if ctype in _BINARY_EXACT or b"\x00" in body[:8192]:
        return "binary"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    if ctype == "application/json" or ctype.endswith("+json") or ctype in ("text/json", "application/x-ndjson"):
        return "json"
    if ctype == "application/x-www-form-urlencoded":
        return "form"
    if ctype in ("application/xml", "text/xml") or ctype.endswith("+xml"):
        return "xml"
    if not ctype and body.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "text"


def pretty_json(text: str) -> str | None:
    """JSON re-indented by two spaces, keys in their order; None when it does not parse."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    # ensure_ascii=False keeps the text readable; control characters are still \u-escaped by json.
    return json.dumps(value, indent=2, ensure_ascii=False)


def _inflate(body: bytes, wbits: int) -> tuple[bytes, bool]:
    decoder = zlib.decompressobj(wbits)
    data = decoder.decompress(body, DECODE_LIMIT)
    return data, len(data) >= DECODE_LIMIT and (bool(decoder.unconsumed_tail) or not decoder.eof)


def decode_content(body: bytes, encoding: str) -> tuple[bytes, bool] | None:
    """``body`` inflated from gzip or deflate, up to :data:`DECODE_LIMIT` bytes, and whether it
    stopped at that limit; None when the coding is another or the body is not valid in it.

    A truncated body inflates as far as it goes.
    """
    wbits = _WBITS.get(encoding)
    if wbits is None:
        return None
    try:
        return _inflate(body, wbits)
    except zlib.error:
        if encoding == "deflate":
            try:  # some servers send raw deflate without the zlib header
                return _inflate(body, -zlib.MAX_WBITS)
            except zlib.error:
                return None
        return None


@dataclass(frozen=True)
class ReadableBody:
    """A body as it is read: decoded when it came compressed, with what was done to it."""

    data: bytes
    """The bytes to read: inflated when the body came gzip or deflate and inflates, else as recorded."""
    kind: BodyKind
    """What ``data`` was taken to be (:func:`body_kind`)."""
    size: int
    """Bytes in ``data`` when decoded, else the size received (more than recorded when cut)."""
    notes: tuple[str, ...] = ()
    """What was done to read it, or why not: ``decoded from gzip (990 B)``, ``not valid gzip:
    shown as received``. Our words only (a coding we do not decode is not named): safe to print."""


def readable_body(message: Request | Response, *, decode: bool = True) -> ReadableBody:
    """``message``'s body decoded from its Content-Encoding (unless ``decode`` is False) and judged.

    Args:
        message: the request or response.
        decode: inflate a gzip or deflate body; False reads the bytes as recorded (a hex dump).
    """
    body = message.body
    size = max(message.body_size, len(body))
    notes: list[str] = []
    encoding = (message.headers.get("content-encoding") or "").strip().lower()
    if decode and body and encoding not in ("", "identity"):
        decoded = decode_content(body, encoding)
        if encoding not in CODINGS:
            notes.append("shown as received: only gzip and deflate bodies are decoded")
        elif decoded is None:
            notes.append(f"not valid {encoding}: shown as received")
        else:
            body, stopped = decoded
            notes.append(f"decoded from {encoding} ({format_size(size)})")
            if stopped:
                notes.append(f"decoded only the first {format_size(DECODE_LIMIT)}")
            size = len(body)
    return ReadableBody(body, body_kind(message.content_type, body), size, tuple(notes))
