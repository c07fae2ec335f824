"""Real local services and a real relay + agent for the end-to-end tunnel tests.

Local services run in their own thread and event loop (as a developer's app would run in its
own process), so a slow local handler never stalls the relay or the agent under test. The
relay and the agent run in the test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import pytest
import uvicorn
from websockets.asyncio.server import ServerConnection, serve
from websockets.server import ServerProtocol
from websockets.datastructures import Headers as WsHeaders
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from devtunnel.capture.recorder import Recorder
from devtunnel.capture.store import Store
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.info import TunnelInfo
from devtunnel.agent.service import AgentService
from devtunnel.agent.tunnel import Backoff
from devtunnel.protocol import RelayConnection
from devtunnel.protocol.events import Hello
from devtunnel.relay.server import Relay
from devtunnel.relay.settings import RelaySettings
from tests.helpers import wait_for

TOKEN = "s3cret-token"


# -- a thread with its own event loop -----------------------------------------------------------
class LoopThread:
    """An event loop running in a daemon thread; ``call`` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Awaitable[Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        """Cancel what still runs there (a handler waiting on a kept-alive connection, say), as
        ``asyncio.run`` does, then stop the loop: no task is left to be destroyed pending."""
        if self.thread.is_alive():
            try:
                self.call(_cancel_the_rest(), timeout=5)
            except (TimeoutError, RuntimeError):
                pass  # a loop already stopped, or a task that ignores cancelling: stop anyway
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _listen() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


# -- the local HTTP app (uvicorn) -------------------------------------------------------------------
@dataclass
class LocalState:
    """What the local app saw, and switches the tests flip to let slow handlers go on."""

    release_sse: threading.Event = field(default_factory=threading.Event)
    release_slow: threading.Event = field(default_factory=threading.Event)
    seen_targets: list[bytes] = field(default_factory=list)


def _pattern(n: int) -> bytes:
    """``n`` bytes of a non-repeating-looking pattern (every byte value, non-UTF-8)."""
    block = bytes(range(256)) * 4096  # 1 MiB
    return (block * (n // len(block) + 1))[:n]


async def _read_body(receive: Callable[[], Awaitable[dict[str, Any]]]) -> tuple[int, str, bytes]:
    digest = hashlib.sha256()
    size = 0
    head = bytearray()
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        digest.update(chunk)
        size += len(chunk)
        if len(head) < 1 << 20:
            head += chunk
        if not message.get("more_body"):
            return size, digest.hexdigest(), bytes(head)


def make_local_app(state: LocalState) -> Callable[..., Awaitable[None]]:
    """A raw ASGI app with one route per traffic rule under test."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        path = scope["path"]
        target = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
        state.seen_targets.append(target)

        async def respond(status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> None:
            hs = list(headers or [])
            if not any(n.lower() == b"content-length" for n, _ in hs):
                hs.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": hs})
            await send({"type": "http.response.body", "body": body})

        if path == "/echo":
            size, sha, body = await _read_body(receive)
            report = {
                "method": scope["method"],
                "target": base64.b64encode(target).decode(),
                "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
                "size": size,
                "sha256": sha,
                "client_port": scope["client"][1],
                "body": base64.b64encode(body).decode() if size <= 1 << 20 else None,
            }
            await respond(200, json.dumps(report).encode(), [(b"content-type", b"application/json")])
        elif path == "/big":
            n = int(scope["query_string"].decode().partition("=")[2])
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(n).encode()), (b"content-type", b"application/octet-stream")]})
            data = _pattern(n)
            for i in range(0, n, 1 << 20):
                await send({"type": "http.response.body", "body": data[i : i + (1 << 20)], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/chunked":
            await _read_body(receive)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for i in range(5):
                await send({"type": "http.response.body", "body": f"part {i}\n".encode(), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/gzip":
            payload = gzip.compress(b"compressed body " * 100)
            await respond(200, payload, [(b"content-encoding", b"gzip"), (b"content-type", b"text/plain")])
        elif path == "/redirect":
            await respond(302, b"", [(b"location", b"/echo?from=redirect")])
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            if status in (204, 304):
                await send({"type": "http.response.start", "status": status, "headers": [(b"etag", b'"v1"')]})
                await send({"type": "http.response.body", "body": b""})
            else:
                await respond(status, f"status {status}".encode())
        elif path == "/head":
            await respond(200, b"x" * 1234, [(b"content-type", b"text/plain")])
        elif path == "/sse":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
            await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, state.release_sse.wait, 30)
            await send({"type": "http.response.body", "body": b"data: second\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/slow":
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, state.release_slow.wait, 30)
            await respond(200, b"slow done")
        else:
            await respond(404, b"not found")

    return app


@contextmanager
def local_http(state: LocalState | None = None, *, tls_pem: Path | None = None) -> Iterator[tuple[int, LocalState]]:
    """The local app served by uvicorn (httptools) in its own thread; yields (port, state).

    ``tls_pem`` (a key and certificate chain in one PEM file) serves https instead of http.
    """
    state = state or LocalState()
    thread = LoopThread()
    sock = _listen()
    tls = {"ssl_certfile": str(tls_pem), "ssl_keyfile": str(tls_pem)} if tls_pem else {}
    config = uvicorn.Config(make_local_app(state), lifespan="off", log_level="warning", log_config=None, access_log=False,
                            http="httptools", timeout_keep_alive=30, proxy_headers=False, **tls)
    server = uvicorn.Server(config)
    future = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), thread.loop)
    try:

        def started() -> bool:
            if future.done():
                future.result()  # raises what stopped the server
            return bool(server.started)

        wait_for(started, what="the local uvicorn app to start")
        yield sock.getsockname()[1], state
    finally:
        state.release_sse.set()
        state.release_slow.set()
        server.should_exit = True
        future.result(10)
        sock.close()
        thread.close()


@pytest.fixture
def local() -> Iterator[tuple[int, LocalState]]:
    """The local app on a free port, for the test: (port, state)."""
    with local_http() as served:
        yield served


# -- a raw TCP local service, for responses no framework would send -----------------------------------
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextmanager
def raw_server(handler: RawHandler) -> Iterator[int]:
    """A TCP server running ``handler`` per connection in its own thread; yields its port."""
    thread = LoopThread()
    sock = _listen()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except asyncio.CancelledError:
            # Cancelled as the service stops with the connection open. Python 3.11's start_server
            # asks a cancelled handler task for its exception, which raises, and logs that as
            # an error ("Exception in callback"), which tests that want no error log then see.
            pass

    async def start() -> asyncio.Server:
        return await asyncio.start_server(guarded, sock=sock)

    server = thread.call(start())
    try:
        yield sock.getsockname()[1]
    finally:
        thread.loop.call_soon_threadsafe(server.close)
        thread.close()


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    """The raw request head (up to and including the blank line)."""
    return await reader.readuntil(b"\r\n\r\n")


class StrayBodyService:
    """A raw local service answering a request for ``path`` with the head ``answer`` (a 204 or
    304 that announces a body it cannot have) and writing ``stray`` (that body) where a service
    that announced one writes it anyway: after the head, at the front of its next answer on the
    connection; any other request gets ``200`` and ``next``. Counts its connections.

    ``request_body``: bytes each request carries (read before answering).
    """

    def __init__(self, path: bytes, answer: bytes, stray: bytes, *, request_body: int = 0) -> None:
        self.path, self.answer, self.stray, self.request_body = path, answer, stray, request_body
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        pending = b""
        while True:
            try:
                head = await read_request_head(reader)
                if self.request_body:
                    await reader.readexactly(self.request_body)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            if b" " + self.path + b" " in head:
                writer.write(self.answer)
                pending = self.stray
            else:
                writer.write(pending + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
                pending = b""
            await writer.drain()
        writer.close()


# -- the local WebSocket service ---------------------------------------------------------------------
class _AnsweringProtocol(ServerProtocol):
    """Answers a peer's close frame with ``answer_code`` rather than echoing the peer's code."""

    answer_code = 1000

    def send_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE and self.close_rcvd is not None and self.close_sent is None:
            frame = Frame(Opcode.CLOSE, Close(self.answer_code, "").serialize())
        super().send_frame(frame)


@contextmanager
def local_websocket(*, tls_pem: Path | None = None, closes: list[int | None] | None = None,
                    answer_close: int | None = None) -> Iterator[tuple[int, list[WsRequest]]]:
    """An echo WebSocket server; ``close:CODE`` closes with CODE, ``vanish`` drops the connection
    without a close frame; path ``/reject`` answers 403.

    ``tls_pem`` (a key and certificate chain in one PEM file) serves wss instead of ws.
    ``closes`` gets the close code each session received (None: none came). ``answer_close``:
    a client's close is answered with this code instead of its own, as aiohttp answers 1000.
    """
    tls: dict[str, Any] = {}
    if tls_pem is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(tls_pem))
        tls["ssl"] = ctx
    thread = LoopThread()
    sock = _listen()
    requests: list[WsRequest] = []

    def process_request(connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        requests.append(request)
        if request.path.startswith("/reject"):
            return WsResponse(403, "Forbidden", WsHeaders([("Content-Length", "8"), ("X-Why", "nope")]), b"go away!")
        return None

    async def echo(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                if isinstance(message, str) and message.startswith("close:"):
                    await ws.close(int(message[6:]), "bye")
                    return
                if message == "vanish":  # gone without a close frame
                    ws.transport.abort()
                    return
                await ws.send(message)
        finally:
            if closes is not None:
                rcvd = ws.protocol.close_rcvd
                closes.append(rcvd.code if rcvd is not None else None)

    class AnsweringConnection(ServerConnection):
        def __init__(self, protocol: Any, *args: Any, **kwargs: Any) -> None:
            protocol.__class__ = _AnsweringProtocol
            protocol.answer_code = answer_close
            super().__init__(protocol, *args, **kwargs)

    def select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
        return next((p for p in offered if p in ("chat.v2", "chat.v1")), None)

    async def start() -> Any:
        if answer_close is not None:
            tls["create_connection"] = AnsweringConnection
        return await serve(echo, sock=sock, process_request=process_request, select_subprotocol=select_subprotocol,
                           compression=None, max_size=None, **tls)

    server = thread.call(start())
    try:
        yield sock.getsockname()[1], requests
    finally:
        server.close()
        thread.close()


# -- relay + agent -----------------------------------------------------------------------------------
@dataclass
class Harness:
    """A relay and an agent service in the test's loop, with one helper per common step."""

    relay: Relay
    service: AgentService
    store: Store
    recorder: Recorder
    infos: list[TunnelInfo] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.relay.port}"

    def host(self, name: str) -> str:
        return f"{name}.localhost:{self.relay.port}"

    async def start(self, target: str, name: str = "app", **options: Any) -> TunnelInfo:
        return await self.service.start_tunnel(TunnelConfig(target=target, name=name, **options))

    async def exchanges(self, count: int, timeout: float = 10.0) -> list[Any]:
        """Wait until ``count`` finished exchanges are stored; returns them oldest first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await asyncio.to_thread(self.recorder.flush)
            found = [ex for ex in self.store.query() if ex.complete]
            if len(found) >= count:
                return found
            if loop.time() > deadline:
                raise AssertionError(f"{len(found)} exchanges recorded, expected {count}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def relay_and_agent(tmp_path: Path, *, relay_port: int = 0, backoff: Backoff | None = None,
                          body_cap: int = 10 << 20, body_budget: int | None = None, relay_host: str = "127.0.0.1",
                          **relay_settings: Any) -> AsyncIterator[Harness]:
    """A token-checking relay on loopback (``relay_host``: ``::1`` for IPv6; ``relay_settings``
    override its settings) and an agent service recording to ``tmp_path`` (``body_budget``: its
    ``--body-budget``, else the default)."""
    relay = Relay(RelaySettings(host=relay_host, port=relay_port, domain="localhost", tokens=[TOKEN], **relay_settings))
    await relay.start()
    store = Store(tmp_path / "captures.db")
    recorder = Recorder(store)
    authority = f"[{relay_host}]" if ":" in relay_host else relay_host
    service = AgentService(store=store, recorder=recorder, relay=f"ws://{authority}:{relay.port}", token=TOKEN,
                           body_cap=body_cap, backoff=backoff,
                           **({} if body_budget is None else {"body_budget": body_budget}))
    harness = Harness(relay, service, store, recorder)
    service.subscribe(harness.infos.append)
    try:
        yield harness
    finally:
        await service.stop()
        await harness.relay.stop()
        recorder.close()
        store.close()


def parse_response(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of one raw HTTP/1.1 response read to connection close."""
    out: dict[str, Any] = {"headers": [], "body": bytearray()}

    class P:
        def on_header(self, n: bytes, v: bytes) -> None:
            out["headers"].append((n, v))

        def on_body(self, b: bytes) -> None:
            out["body"] += b

    parser = httptools.HttpResponseParser(P())
    parser.feed_data(raw)
    return parser.get_status_code(), out["headers"], bytes(out["body"])


async def raw_request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read until the server closes (send Connection: close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read(-1)
    finally:
        writer.close()


async def read_hello(ws: ServerConnection, conn: RelayConnection) -> Hello | None:
    """A fake relay's side of the handshake: the agent's messages up to its HELLO, read into
    ``conn`` (None: the agent left before sending one)."""
    async for message in ws:
        for event in conn.receive_data(message):  # type: ignore[arg-type]
            if isinstance(event, Hello):
                return event
    return None


class StreamTasks:
    """Counts the tasks the agent's session starts to carry a stream (``Session._serve_stream``),
    seen from the running loop's task factory: a patched method of the session would not be
    seen where it runs compiled (devtunnel/native.py). Requests sent one after another tell
    which of them took a task (a quick answer takes none)."""

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> StreamTasks:
        self._loop = asyncio.get_running_loop()
        self._previous = self._loop.get_task_factory()
        self._loop.set_task_factory(self._make)  # type: ignore[arg-type]
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.set_task_factory(self._previous)

    def _make(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        # Interpreted, a coroutine has a qualified name; compiled, its class is named for it.
        if "_serve_stream" in (getattr(coro, "__qualname__", None) or type(coro).__name__):
            self.count += 1
        if self._previous is not None:
            return self._previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)
