"""Export exchanges as raw HTTP/1.1 messages, with the bytes as captured.

Each message is assembled by ``export.assemble`` (the agent API's assembler too), so it is one
valid HTTP/1.1 message: a body that came chunked is chunked again, with its Transfer-Encoding.
The text holds the messages exactly when they are printable UTF-8. When a message holds bytes
that cannot be shown safely (binary body, non-UTF-8 or control characters), its text shows
the head with ``\\xNN`` escapes and a note instead of the body, and the exact bytes of the
message are in ``Export.files`` under ``DIR/ID.request.http`` (or ``.response.http``).
A body cut at the store's body cap is the recorded part, framed as that many bytes, and the
head says so in a ``Devtunnel-Note`` field (``export.assemble``): the file stays one valid message.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator, Sequence

from devtunnel.capture.model import Exchange
from devtunnel.export.assemble import Message, assemble_request, assemble_response
from devtunnel.export.base import Export, each_prepared, file_stem, joined, safe_text

__all__ = ["export_raw", "raw_pieces"]


def _escaped(raw: bytes, *, breaks: tuple[int, ...] = (9, 10, 13)) -> str:
    """``raw`` with every byte that is not printable ASCII (or one of ``breaks``: tab, CR, LF)
    shown as ``\\xNN``."""
    return "".join(
        chr(b) if 0x20 <= b < 0x7F or b in breaks else f"\\x{b:02x}"
        for b in raw
    )


def _escaped_head(message: Message) -> str:
    """The head with every byte that is not printable ASCII or tab shown as ``\\xNN``: CR LF
    only at its lines' ends."""
    lines = [message.start, *(n + b": " + v for n, v in message.fields), b"", b""]
    return "\r\n".join(_escaped(line, breaks=(9,)) for line in lines)


def _message_text(message: Message, body_len: int, path: str, files: dict[str, bytes]) -> str:
    # A record made before the agent refused them may hold CR or LF inside a line: shown as it
    # is, it would read as a line of its own (a header the request never had).
    head_text = None if message.breaks_inside() else safe_text(message.head, allow="\t\r\n")
    body_text = safe_text(message.body, allow="\t\r\n")
    if head_text is None or body_text is None:
        files[path] = bytes(message)
    if head_text is None:
        head_text = _escaped_head(message)
    if body_text is None:
        body_text = f"[{body_len} bytes of body that cannot be shown as text: exact message in {path}]\r\n"
    return head_text + body_text


def raw_pieces(
    exchanges: Iterable[Exchange],
    *,
    response: bool = False,
    redact: bool = False,
    body_dir: str = ".",
) -> Iterator[Export]:
    """The text of :func:`export_raw` an exchange at a time, each with its side files (the
    exchanges read one by one)."""
    for index, ex in enumerate(each_prepared(exchanges, redact=redact)):
        files: dict[str, bytes] = {}
        stem = posixpath.join(body_dir, file_stem(ex, index))
        req = ex.request
        parts = [_message_text(assemble_request(req), len(req.body), f"{stem}.request.http", files)]
        if response:
            resp = ex.response
            if resp is None:
                reason = ex.error or "no response"
                detail = f": {ex.error_message}" if ex.error_message else ""
                parts.append(_escaped(f"[no response ({reason}){detail}]\r\n".encode("utf-8", "replace")))
            else:
                parts.append(_message_text(assemble_response(resp), len(resp.body), f"{stem}.response.http", files))
        block = "\r\n".join(parts)
        yield Export(block if index == 0 else "\r\n" + block, files)


def export_raw(
    exchanges: Sequence[Exchange],
    *,
    response: bool = False,
    redact: bool = False,
    body_dir: str = ".",
) -> Export:
    """Each request (and with ``response=True`` its response) as raw HTTP text.

    Args:
        exchanges: the exchanges, in order; blocks are separated by a blank line.
        response: also give the response after the request (a note when there is none).
        redact: replace credentials, signatures and secret fields with ``<redacted>``.
        body_dir: directory the side files with exact bytes are referred to in.
    """
    return joined(raw_pieces(exchanges, response=response, redact=redact, body_dir=body_dir))
