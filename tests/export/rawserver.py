"""A small HTTP/1.1 server on loopback that records the exact bytes of each request.

It reads one request per connection (framed by Content-Length or chunked encoding), keeps the
raw bytes and a parsed view, and answers with a fixed raw response. Tests use it to check that
a curl command or a replay put exactly the right bytes on the wire.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

__all__ = ["RawServer", "Received", "parse_request"]

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class Received:
    """One request as it arrived."""

    raw: bytes
    method: bytes = b""
    target: bytes = b""
    version: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    chunked: bool = False


def _read_until(sock: socket.socket, buf: bytearray, marker: bytes) -> int:
    while True:
        at = buf.find(marker)
        if at >= 0:
            return at
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("peer closed before the request was complete")
        buf += data


def _read_exactly(sock: socket.socket, buf: bytearray, n: int) -> None:
    while len(buf) < n:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("peer closed before the body was complete")
        buf += data


def parse_request(sock: socket.socket) -> Received:
    """Read one request from ``sock`` and parse it (headers split at the first colon)."""
    buf = bytearray()
    end = _read_until(sock, buf, b"\r\n\r\n")
    head = bytes(buf[:end])
    rest = bytearray(buf[end + 4 :])
    lines = head.split(b"\r\n")
    # Method is the first word and version the last: a target may hold spaces.
    method, _, rest_of_line = lines[0].partition(b" ")
    target, _, version = rest_of_line.rpartition(b" ")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name, value.strip(b" \t")))
    lower = {n.lower(): v for n, v in headers}
    body = b""
    chunked = b"chunked" in lower.get(b"transfer-encoding", b"").lower()
    if chunked:
        chunks = bytearray()
        while True:
            at = _read_until(sock, rest, b"\r\n")
            size = int(bytes(rest[:at]).split(b";")[0], 16)
            del rest[: at + 2]
            _read_exactly(sock, rest, size + 2)
            chunks += rest[:size]
            del rest[: size + 2]
            if size == 0:
                break
        body = bytes(chunks)
    elif b"content-length" in lower:
        n = int(lower[b"content-length"])
        _read_exactly(sock, rest, n)
        body = bytes(rest[:n])
    raw = head + b"\r\n\r\n" + (body if not chunked else b"")
    return Received(raw=raw, method=method, target=target, version=version, headers=headers, body=body, chunked=chunked)


class RawServer:
    """Threaded loopback server: ``with RawServer() as srv: ... srv.received``.

    Attributes:
        response: the raw bytes sent back for every request (200, empty body by default).
        received: every request parsed so far, in arrival order.
    """

    def __init__(self, response: bytes = OK_RESPONSE) -> None:
        self.response = response
        self.received: list[Received] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    self.received.append(parse_request(conn))
                    conn.sendall(self.response)
                except (OSError, ValueError):
                    continue
