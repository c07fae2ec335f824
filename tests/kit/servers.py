"""A real local HTTP service for tests: ``http.server`` in a thread on 127.0.0.1, answering with a function.

    def answer(request: Received) -> Reply:
        return Reply(200, [("Content-Type", "text/plain")], b"ok")

    with http_server(answer) as service:
        httpx.get(service.url + "/x")
        assert service.received[0].path == "/x"

Every request, whatever its method (as typed, even one HTTP does not know), is read whole
(``Content-Length`` bodies), kept in ``received`` and answered with what ``answer`` returns. The
server speaks HTTP/1.1 with keep-alive; ``Content-Length`` is added to a reply without one. A
handler class of one's own (``SimpleHTTPRequestHandler`` for files...) can be served instead.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple


class Received(NamedTuple):
    """One request as the service read it: method, path (with the query), header fields and body."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``default``."""
        return next((v for n, v in self.headers if n.lower() == name.lower()), default)

    def lower_headers(self) -> dict[str, str]:
        """``{lower-case name: value}``, the last value of a repeated name winning."""
        return {n.lower(): v for n, v in self.headers}


@dataclass
class Reply:
    """What the service answers: status, header fields, body, and a reason other than the standard one."""

    status: int = 200
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    reason: str | None = None

    @classmethod
    def json(cls, value: object, status: int = 200) -> Reply:
        """``value`` as a JSON body with its content type."""
        return cls(status, [("Content-Type", "application/json")], json.dumps(value).encode())


Answer = Callable[[Received], Reply]


@dataclass
class LocalServer:
    """A running service: its port, its base URL and the requests it received, in order."""

    port: int
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler_for(answer: Answer, received: list[Received], server_version: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Received(self.command, self.path, list(self.headers.items()),
                               self.rfile.read(length) if length else b"")
            received.append(request)
            reply = answer(request)
            self.send_response(reply.status, reply.reason)  # also sends Server and a Date of now
            for name, value in reply.headers:
                self.send_header(name, value)
            if not any(name.lower() == "content-length" for name, _ in reply.headers):
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def __getattr__(self, name: str) -> Any:
            if name.startswith("do_"):
                return self._answer  # every method, as typed
            raise AttributeError(name)

        def version_string(self) -> str:
            return server_version if server_version is not None else super().version_string()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def http_server(answer: Answer | None = None, *, handler: Callable[..., BaseHTTPRequestHandler] | None = None,
                server_version: str | None = None) -> Iterator[LocalServer]:
    """Serve on a free port of 127.0.0.1 until the block ends; yields the running ``LocalServer``.

    Give ``answer`` (a function of the request), or ``handler``: a ``BaseHTTPRequestHandler``
    class (or a ``functools.partial`` of one) served as it is, receiving nothing into ``received``.
    ``server_version`` replaces the ``Server`` header ``answer`` replies carry.
    """
    if (answer is None) == (handler is None):
        raise TypeError("give either answer or handler")
    received: list[Received] = []
    if handler is None:
        assert answer is not None
        handler = _handler_for(answer, received, server_version)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield LocalServer(server.server_address[1], received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def rude_server(how: str) -> Iterator[str]:
    """A service on a free port of 127.0.0.1 that reads each request's head and never answers:
    ``how="reset"`` resets the connection (SO_LINGER 0: an RST), ``"close"`` closes it (a FIN).
    Yields its base URL; at most 32 connections, each read for at most 5 s."""
    import socket
    import struct

    if how not in ("reset", "close"):
        raise ValueError(how)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        for _ in range(32):
            conn: socket.socket | None = None
            while conn is None and not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
            if conn is None:
                return
            with conn:
                conn.settimeout(5)
                head = b""
                try:
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        data = conn.recv(65536)
                        if not data:
                            break
                        head += data
                    # And the body it declares: a close with bytes unread is sent as a reset.
                    top, _, body = head.partition(b"\r\n\r\n")
                    declared = re.search(rb"(?im)^content-length:[ \t]*(\d+)", top)
                    while declared and len(body) < min(int(declared[1]), 1 << 20):
                        data = conn.recv(65536)
                        if not data:
                            break
                        body += data
                except OSError:
                    pass
                if how == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()
