"""Frame layouts of the tunnel protocol: constants, encoders and payload decoders.

Every frame starts with a 9-byte header, the same shape as HTTP/2's::

    +-----------------------------------------------+
    |                 Length (24)                   |
    +---------------+---------------+---------------+
    |   Type (8)    |   Flags (8)   |
    +-+-------------+---------------+-------------------------------+
    |R|                 Stream Identifier (31)                      |
    +=+=============================================================+
    |                   Payload (Length bytes)                      |
    +---------------------------------------------------------------+

Encoders return ready-to-send ``bytes``; decoders take one frame's payload and raise
``ProtocolError`` when it is malformed. ``docs/protocol.md`` documents every layout.
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Any

from devtunnel.errors import ProtocolError
from devtunnel.protocol.events import Fields

HEADER_SIZE = 9
MAX_LENGTH = (1 << 24) - 1  # the 24-bit length field
MAX_STREAM_ID = (1 << 31) - 1
MAX_WINDOW = (1 << 31) - 1

# The 24-bit length and the 8-bit type share one big-endian u32.
HEADER: struct.Struct = struct.Struct(">IBI")
U32 = struct.Struct(">I")
U16 = struct.Struct(">H")
PING_PAYLOAD = struct.Struct(">8s")
# REQUEST head prefix: method, target, version, scheme, remote address lengths; header count.
REQUEST_PREFIX = struct.Struct(">HIBBHH")
# RESPONSE head prefix: status, version length, reason length, header count.
RESPONSE_PREFIX = struct.Struct(">HBHH")
# One header field: name length, value length.
FIELD = struct.Struct(">HI")


class FrameType(enum.IntEnum):
    """The frame types of protocol version 1. Receivers skip types they do not know."""

    HELLO = 0x1
    WELCOME = 0x2
    GOAWAY = 0x3
    REQUEST = 0x4
    RESPONSE = 0x5
    DATA = 0x6
    WINDOW_UPDATE = 0x7
    RESET = 0x8
    WS_MESSAGE = 0x9
    WS_CLOSE = 0xA
    PING = 0xB
    PONG = 0xC
    POOL = 0xD
    RULES = 0xE  # agent -> relay: the tunnel's rules changed (JSON, as in HELLO)


class Flag(enum.IntFlag):
    """Frame flags. Each bit has one meaning across all types; unknown bits are ignored."""

    END_STREAM = 0x01  # REQUEST, RESPONSE, DATA: the last frame of this side's message
    WEBSOCKET = 0x02  # REQUEST: the public client asks for a WebSocket upgrade
    TEXT = 0x04  # WS_MESSAGE: a text (UTF-8) message rather than binary
    FIN = 0x08  # WS_MESSAGE: the last fragment of a message


# Plain ints for the hot path: IntEnum/IntFlag arithmetic is several times slower.
HELLO: int = int(FrameType.HELLO)
WELCOME: int = int(FrameType.WELCOME)
GOAWAY: int = int(FrameType.GOAWAY)
REQUEST: int = int(FrameType.REQUEST)
RESPONSE: int = int(FrameType.RESPONSE)
DATA: int = int(FrameType.DATA)
WINDOW_UPDATE: int = int(FrameType.WINDOW_UPDATE)
RESET: int = int(FrameType.RESET)
WS_MESSAGE: int = int(FrameType.WS_MESSAGE)
WS_CLOSE: int = int(FrameType.WS_CLOSE)
PING: int = int(FrameType.PING)
PONG: int = int(FrameType.PONG)
POOL: int = int(FrameType.POOL)
RULES: int = int(FrameType.RULES)
END_STREAM: int = int(Flag.END_STREAM)
WEBSOCKET: int = int(Flag.WEBSOCKET)
TEXT: int = int(Flag.TEXT)
FIN: int = int(Flag.FIN)

# Frames whose payload is a message head or handshake, bounded by ``max_head_size``.
HEAD_TYPES = frozenset({HELLO, WELCOME, REQUEST, RESPONSE, RULES})
# Frames that belong to the connection (stream 0) rather than to one stream.
CONNECTION_TYPES = frozenset({HELLO, WELCOME, GOAWAY, PING, PONG, POOL, RULES})
KNOWN_TYPES = frozenset(int(t) for t in FrameType)

_pack_header = HEADER.pack


def frame(ftype: int, flags: int, stream_id: int, payload: bytes | memoryview = b"") -> bytes:
    """Encode one frame: header and payload."""
    return _pack_header(len(payload) << 8 | ftype, flags, stream_id) + payload


def header(ftype: int, flags: int, stream_id: int, length: int) -> bytes:
    """Encode only a frame header (the payload follows separately, without a copy)."""
    return _pack_header(length << 8 | ftype, flags, stream_id)


# -- handshake ---------------------------------------------------------------------------


def encode_json(obj: dict[str, Any]) -> bytes:
    """Encode a handshake object as compact UTF-8 JSON."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def decode_json(payload: bytes, what: str) -> dict[str, Any]:
    """Decode a handshake payload, which must be a JSON object."""
    try:
        obj = json.loads(payload.decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what} frame is not valid UTF-8 JSON") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} frame must hold a JSON object")
    return obj


# -- codes and reasons (GOAWAY, RESET, WS_CLOSE) ----------------------------------------------


def decode_code_reason(payload: bytes, what: str, size: int = 4) -> tuple[int, str]:
    """Split a code-and-reason payload; ``size`` is the width of the code (4, or 2 for WS_CLOSE)."""
    if len(payload) < size:
        raise ProtocolError(f"{what} frame is shorter than its {size}-byte code")
    code = int.from_bytes(payload[:size], "big")
    try:
        reason = payload[size:].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} reason is not valid UTF-8") from exc
    return code, reason


# -- message heads ----------------------------------------------------------------------------


def _fields(headers: Fields, parts: list[bytes]) -> None:
    pack = FIELD.pack
    append = parts.append
    for name, value in headers:
        append(pack(len(name), len(value)))
        append(name)
        append(value)


def encode_request(
    method: bytes,
    target: bytes,
    http_version: bytes,
    headers: Fields,
    remote_addr: str,
    scheme: str,
) -> bytes:
    """Encode a REQUEST payload (without the frame header).

    Raises:
        ValueError: a field is longer than its length prefix allows.
    """
    remote = remote_addr.encode()
    scheme_b = scheme.encode()
    try:
        parts = [
            REQUEST_PREFIX.pack(len(method), len(target), len(http_version), len(scheme_b), len(remote), len(headers)),
            method,
            target,
            http_version,
            scheme_b,
            remote,
        ]
        _fields(headers, parts)
    except struct.error as exc:
        raise ValueError(f"request head field too long for the wire format: {exc}") from exc
    return b"".join(parts)


def encode_response(status: int, reason: bytes, http_version: bytes, headers: Fields) -> bytes:
    """Encode a RESPONSE payload (without the frame header).

    Raises:
        ValueError: the status is not 100-999 or a field is longer than its prefix allows.
    """
    if not 100 <= status <= 999:
        raise ValueError(f"response status {status} is not a 3-digit HTTP status")
    try:
        parts = [RESPONSE_PREFIX.pack(status, len(http_version), len(reason), len(headers)), http_version, reason]
        _fields(headers, parts)
    except struct.error as exc:
        raise ValueError(f"response head field too long for the wire format: {exc}") from exc
    return b"".join(parts)


def _decode_fields(payload: bytes, pos: int, count: int, what: str) -> Fields:
    unpack = FIELD.unpack_from
    out: list[tuple[bytes, bytes]] = []
    append = out.append
    try:
        for _ in range(count):
            name_len, value_len = unpack(payload, pos)
            pos += 6
            name_end = pos + name_len
            value_end = name_end + value_len
            append((payload[pos:name_end], payload[name_end:value_end]))
            pos = value_end
    except struct.error as exc:
        raise ProtocolError(f"{what} frame is truncated in its header fields") from exc
    if pos != len(payload):
        raise ProtocolError(f"{what} frame length does not match its header fields")
    return tuple(out)


def decode_request(payload: bytes) -> tuple[bytes, bytes, bytes, str, str, Fields]:
    """Decode a REQUEST payload to (method, target, version, scheme, remote_addr, headers)."""
    try:
        method_len, target_len, version_len, scheme_len, remote_len, count = REQUEST_PREFIX.unpack_from(payload)
    except struct.error as exc:
        raise ProtocolError("REQUEST frame is shorter than its fixed prefix") from exc
    pos = REQUEST_PREFIX.size
    method = payload[pos : pos + method_len]
    pos += method_len
    target = payload[pos : pos + target_len]
    pos += target_len
    version = payload[pos : pos + version_len]
    pos += version_len
    scheme_b = payload[pos : pos + scheme_len]
    pos += scheme_len
    remote_b = payload[pos : pos + remote_len]
    pos += remote_len
    if pos > len(payload):
        raise ProtocolError("REQUEST frame is truncated in its request line")
    try:
        scheme = scheme_b.decode("ascii")
        remote = remote_b.decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError("REQUEST scheme or remote address is not valid text") from exc
    return method, target, version, scheme, remote, _decode_fields(payload, pos, count, "REQUEST")


def decode_response(payload: bytes) -> tuple[int, bytes, bytes, Fields]:
    """Decode a RESPONSE payload to (status, version, reason, headers)."""
    try:
        status, version_len, reason_len, count = RESPONSE_PREFIX.unpack_from(payload)
    except struct.error as exc:
        raise ProtocolError("RESPONSE frame is shorter than its fixed prefix") from exc
    if not 100 <= status <= 999:
        raise ProtocolError(f"RESPONSE status {status} is not a 3-digit HTTP status")
    pos = RESPONSE_PREFIX.size
    version = payload[pos : pos + version_len]
    pos += version_len
    reason = payload[pos : pos + reason_len]
    pos += reason_len
    if pos > len(payload):
        raise ProtocolError("RESPONSE frame is truncated in its status line")
    return status, version, reason, _decode_fields(payload, pos, count, "RESPONSE")
