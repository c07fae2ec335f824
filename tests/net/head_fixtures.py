"""Local services that record every connection and request head they get, for the tests of
what the relay and the agent let through (hostile targets, trailers, duplicate Host).

Each runs in its own thread and event loop (``tunnel_fixtures.raw_server``), answers every
request with 200 and a fixed body, and answers an upgrade request the same way, then closes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httptools

from tests.net.tunnel_fixtures import raw_server

# Header fields and targets the hostile requests carry; none may ever reach a service.
FORGED = (b"admin.internal", b"Bearer forged")


@dataclass(frozen=True)
class SeenRequest:
    """One request as a local service parsed it."""

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name]


@dataclass
class Seen:
    """What a recording service got: connections accepted and requests parsed."""

    connections: int = 0
    requests: list[SeenRequest] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> tuple[int, list[SeenRequest], bytes]:
        with self.lock:
            return self.connections, list(self.requests), bytes(self.raw)


class _Parse:
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done: list[SeenRequest] = []

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))  # trailers too: a service that merges them must not get forged ones

    def on_message_complete(self) -> None:
        self.done.append(SeenRequest(self.parser.get_method(), self.url, tuple(self.headers)))


@contextmanager
def recording_service(body: bytes = b"ok") -> Iterator[tuple[int, Seen]]:
    """A raw HTTP/1.1 service on 127.0.0.1 recording what it gets; yields (port, seen)."""
    seen = Seen()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with seen.lock:
            seen.connections += 1
        parse = _Parse()
        try:
            while data := await reader.read(65536):
                with seen.lock:
                    seen.raw += data
                upgrade = False
                try:
                    parse.parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    upgrade = True
                except httptools.HttpParserError:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    break
                for request in parse.done:
                    with seen.lock:
                        seen.requests.append(request)
                    writer.write(answer)
                parse.done.clear()
                await writer.drain()
                if upgrade:
                    break
        except ConnectionError:
            pass
        finally:
            try:
                writer.close()
            except RuntimeError:
                pass  # the service stopped (its loop closed) with this connection still open

    with raw_server(handle) as port:
        yield port, seen
