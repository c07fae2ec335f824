"""Local services that record every connection and request they get, for the tests of
what the relay and the agent let through (hostile targets, trailers, duplicate Host), a spy on
the reads the relay's HTTP protocol gets, and a relay with an agent holding tunnels to them.

Each service runs in its own thread and event loop (``tunnel_fixtures.raw_server``), answers every
request with 200 and a fixed body, and answers an upgrade request the same way, then closes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httptools
import pytest

from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.service import AgentService
from devtunnel.relay.http import HeadLimitedHttpProtocol
from devtunnel.relay.server import Relay
from devtunnel.relay.settings import RelaySettings
from tests.net.tunnel_fixtures import TOKEN, LoopThread, raw_server

# Header fields and targets the hostile requests carry; none may ever reach a service.
FORGED = (b"admin.internal", b"Bearer forged")


@dataclass(frozen=True)
class SeenRequest:
    """One request as a local service parsed it."""

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""

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
        self.body = bytearray()
        self.done: list[SeenRequest] = []

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))  # trailers too: a service that merges them must not get forged ones

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done.append(SeenRequest(self.parser.get_method(), self.url, tuple(self.headers), bytes(self.body)))


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


class Reads:
    """What the relay's HTTP protocol read from each client connection (by the client's port):
    the size of every read, and whether the relay had closed the connection after it."""

    def __init__(self) -> None:
        self._sizes: dict[int, list[int]] = {}
        self._closed: set[int] = set()
        self._changed = threading.Condition()

    def add(self, port: int, size: int, closing: bool) -> None:
        with self._changed:
            self._sizes.setdefault(port, []).append(size)
            if closing:
                self._closed.add(port)
            self._changed.notify_all()

    def forget(self, port: int) -> None:
        """Forget what was read from ``port``: call it for a new connection before sending on it
        (a client port is used again once a connection from it has closed)."""
        with self._changed:
            self._sizes.pop(port, None)
            self._closed.discard(port)

    def sizes(self, port: int) -> list[int]:
        with self._changed:
            return list(self._sizes.get(port, []))

    def closed(self, port: int) -> bool:
        with self._changed:
            return port in self._closed

    def wait_read(self, port: int, total: int, timeout: float = 10.0) -> bool:
        """Wait until the relay has read and parsed ``total`` bytes from ``port``, or closed the
        connection; returns False if it closed it. Fails after ``timeout`` seconds."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: port in self._closed or sum(self._sizes.get(port, [])) >= total, timeout)
            assert done, f"the relay read {sum(self._sizes.get(port, []))} of {total} bytes in {timeout} s"
            return port not in self._closed


@contextmanager
def reads_spied() -> Iterator[Reads]:
    """Record every read of every relay HTTP connection while this lasts (a spy on
    ``HeadLimitedHttpProtocol.data_received``, which records once the read is parsed)."""
    reads = Reads()
    original = HeadLimitedHttpProtocol.data_received

    def spy(self: HeadLimitedHttpProtocol, data: bytes) -> None:
        original(self, data)
        reads.add(self.client[1] if self.client else 0, len(data), self.transport.is_closing())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HeadLimitedHttpProtocol, "data_received", spy)
        yield reads


@contextmanager
def relay_with_tunnels(tunnels: list[TunnelConfig], **settings: object) -> Iterator[int]:
    """A relay (``RelaySettings(port=0, domain="localhost", tokens=[TOKEN], **settings)``) and an
    agent holding ``tunnels``, in an event loop of their own thread; yields the relay's port."""
    thread = LoopThread()
    try:
        async def start() -> tuple[Relay, AgentService]:
            relay = Relay(RelaySettings(port=0, domain="localhost", tokens=[TOKEN], **settings))  # type: ignore[arg-type]
            await relay.start()
            agent = AgentService(relay=f"ws://127.0.0.1:{relay.port}", token=TOKEN)
            for tunnel in tunnels:
                await agent.start_tunnel(tunnel)
            return relay, agent

        async def stop(relay: Relay, agent: AgentService) -> None:
            await agent.stop()
            await relay.stop()

        relay, agent = thread.call(start())
        try:
            yield relay.port
        finally:
            thread.call(stop(relay, agent))
    finally:
        thread.close()
