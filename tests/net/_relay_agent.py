"""A small agent for relay tests: speaks the tunnel protocol over a real websockets client.

Each public request becomes an ``AgentRequest`` handed to an async handler, which reads the
body and answers with the helpers below (respecting flow control, like the real agent).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from devtunnel.relay.http import HeadLimitedHttpProtocol
from devtunnel.relay.http_proxy import HttpForwarder
from devtunnel.relay.server import Relay
from devtunnel.relay.settings import RelaySettings
from devtunnel.protocol.agent_side import AgentConnection
from devtunnel.protocol.events import (
    DataReceived,
    Event,
    GoAway,
    RequestReceived,
    StreamReset,
    WebSocketClosed,
    WebSocketMessageReceived,
    Welcome,
    WindowUpdated,
)
from tests.helpers import async_wait_for

Handler = Callable[["AgentRequest"], Awaitable[None]]

TOKEN = "s3cret-token"


@asynccontextmanager
async def running_relay(**settings: Any) -> AsyncIterator[Relay]:
    """A relay on a free loopback port accepting ``TOKEN`` (override any setting)."""
    options: dict[str, Any] = {"port": 0, "tokens": [TOKEN, "other-token"], "domain": "localhost"}
    options.update(settings)
    relay = Relay(RelaySettings(**options))
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


async def echo(request: AgentRequest) -> None:
    """Answer with the request line, the headers as the agent saw them, and the body."""
    body = await request.body()
    lines = [request.event.method + b" " + request.event.target]
    lines += [n + b": " + v for n, v in request.event.headers]
    lines.append(b"body=" + body)
    payload = b"\n".join(lines)
    request.respond(200, [(b"Content-Type", b"text/plain"), (b"Content-Length", str(len(payload)).encode())])
    await request.send(payload, end=True)


async def connect_agent(relay: Relay, name: str | None = "demo", token: str = TOKEN, handler: Handler | None = None,
                        **options: Any) -> ScriptedAgent:
    """An agent connected to ``relay`` (asserting it was welcomed), answering with ``handler``."""
    agent = ScriptedAgent(relay.port, token=token, name=name, handler=handler or echo, **options)
    result = await agent.connect()
    assert isinstance(result, Welcome), result
    return agent


class AgentRequest:
    """One request the relay sent through the tunnel, and how to answer it."""

    def __init__(self, agent: ScriptedAgent, event: RequestReceived) -> None:
        self.agent = agent
        self.event = event
        self.id = event.stream_id
        self.inbox: asyncio.Queue[Event] = asyncio.Queue()
        self.window = asyncio.Event()
        self.ended = event.end_stream

    def header(self, name: bytes) -> list[bytes]:
        """Every value of header ``name`` (lowercase; the names' case is the client's), in order."""
        return [v for n, v in self.event.headers if n.lower() == name]

    async def body(self) -> bytes:
        """Read the whole request body (acknowledging it as it comes)."""
        parts = []
        async for chunk in self.chunks():
            parts.append(chunk)
        return b"".join(parts)

    async def chunks(self) -> Any:
        """Yield request body chunks as they arrive, acknowledging each."""
        while not self.ended:
            event = await self.inbox.get()
            if isinstance(event, DataReceived):
                self.ended = event.end_stream
                if event.data:
                    yield event.data
                    self.agent.conn.acknowledge(self.id, len(event.data), flush=True)
                    self.agent.flush()
            elif isinstance(event, StreamReset):
                raise ConnectionResetError(f"stream reset: {event.reason}")

    def respond(self, status: int, headers: list[tuple[bytes, bytes]] | None = None, *, end: bool = False) -> None:
        """Send the response head."""
        self.agent.conn.send_response(self.id, status, b"", tuple(headers or ()), end_stream=end)
        self.agent.flush()

    async def send(self, data: bytes, *, end: bool = False) -> None:
        """Send body bytes within the send window."""
        conn = self.agent.conn
        while len(data) > conn.send_window(self.id):
            window = conn.send_window(self.id)
            if window:
                conn.send_data(self.id, data[:window])
                data = data[window:]
                self.agent.flush()
            self.window.clear()
            await self.window.wait()
        conn.send_data(self.id, data, end_stream=end)
        self.agent.flush()


    async def send_stalling(self, data: bytes, stalled: asyncio.Event) -> None:
        """Answer 200 with ``data`` as the whole body; set ``stalled`` once the send window is
        used up (the relay stopped acknowledging), then finish sending as credit comes back."""
        self.respond(200, [(b"Content-Length", str(len(data)).encode())])
        sending = asyncio.ensure_future(self.send(data, end=True))
        await async_wait_for(lambda: self.agent.conn.send_window(self.id) == 0,
                             what="the relay to stop acknowledging the response")
        stalled.set()
        await sending


class ScriptedAgent:
    """Connects to a relay's ``/_devtunnel/connect`` and serves requests with ``handler``."""

    def __init__(self, port: int, *, token: str = "", name: str | None = None, handler: Handler | None = None,
                 scheme: str = "ws", ssl: Any = None, initial_window: int | None = None,
                 instance: str | None = None, pool: bool = False) -> None:
        self.url = f"{scheme}://127.0.0.1:{port}/_devtunnel/connect"
        self.token = token
        self.name = name
        self.instance = instance
        self.pool = pool
        self.handler = handler
        self.ssl = ssl
        self.conn = AgentConnection(**({"initial_window": initial_window} if initial_window else {}))
        self.ws: ClientConnection | None = None
        self.welcome: Welcome | None = None
        self.goaway: GoAway | None = None
        self.requests: dict[int, AgentRequest] = {}
        self.closed = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def connect(self) -> Welcome | GoAway:
        """Open the WebSocket, send HELLO; return the relay's WELCOME or GOAWAY."""
        self.ws = await websockets.connect(self.url, ping_interval=None, max_size=None, compression=None, ssl=self.ssl)
        self.conn.send_hello(self.token, self.name, {"agent": "test"}, instance=self.instance, pool=self.pool)
        await self.ws.send(self.conn.data_to_send())
        while self.welcome is None and self.goaway is None:
            try:
                message = await self.ws.recv()
            except websockets.ConnectionClosed:
                break
            self._handle(self.conn.receive_data(message))  # type: ignore[arg-type]
        if self.welcome is not None:
            self._spawn(self._read_loop())
            self._spawn(self._write_loop())
        else:
            self.closed.set()
        result = self.welcome or self.goaway
        assert result is not None, "the relay closed without WELCOME or GOAWAY"
        return result

    def flush(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        """Close the WebSocket and stop every task."""
        if self.ws is not None:
            await self.ws.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stop_reading(self) -> None:
        """Read nothing more from the relay (nor answer its pings), as a hung agent would."""
        assert self.ws is not None
        self.ws.transport.pause_reading()

    def abort(self) -> None:
        """Drop the TCP connection without a WebSocket close, as a crashed agent would."""
        assert self.ws is not None
        self.ws.transport.abort()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_loop(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                self._handle(self.conn.receive_data(message))  # type: ignore[arg-type]
                self.flush()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def _write_loop(self) -> None:
        assert self.ws is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            data = self.conn.data_to_send()
            if data:
                try:
                    await self.ws.send(data)
                except websockets.ConnectionClosed:
                    return

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Welcome):
                self.welcome = event
            elif isinstance(event, GoAway):
                self.goaway = event
            elif isinstance(event, RequestReceived):
                request = AgentRequest(self, event)
                self.requests[event.stream_id] = request
                if self.handler is not None:
                    self._spawn(self.handler(request))
            elif isinstance(event, WindowUpdated):
                request = self.requests.get(event.stream_id)
                if request is not None:
                    request.window.set()
            elif isinstance(event, (DataReceived, StreamReset, WebSocketMessageReceived, WebSocketClosed)):
                request = self.requests.get(event.stream_id)
                if request is not None:
                    request.inbox.put_nowait(event)
                    if isinstance(event, StreamReset):
                        request.window.set()


class ForwarderCalls:
    """What reached the relay's ``HttpForwarder`` while ``forwarder_spied`` lasted: the targets
    of the requests its ASGI task path answered (``__call__``), and the (client, cycle) of each
    request offered to its direct path (``direct``)."""

    def __init__(self) -> None:
        self.tasks: list[bytes] = []
        self.direct: list[tuple[Any, Any]] = []


class _SpiedForwarder:
    """A relay's ``HttpForwarder`` as its ``Relay`` sees it while spied: the calls are noted,
    then made; everything else is the forwarder's own."""

    def __init__(self, forwarder: HttpForwarder, calls: ForwarderCalls) -> None:
        self._forwarder = forwarder
        self._calls = calls

    async def __call__(self, tunnel: Any, scope: Any, *args: Any) -> None:
        self._calls.tasks.append(scope["raw_path"])
        await self._forwarder(tunnel, scope, *args)

    def direct(self, tunnel: Any, client: Any, cycle: Any, host: bytes) -> bool:
        self._calls.direct.append((client, cycle))
        return self._forwarder.direct(tunnel, client, cycle, host)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._forwarder, name)


@contextmanager
def forwarder_spied() -> Iterator[ForwarderCalls]:
    """The calls every relay (running or started while this lasts) makes to its forwarder.

    Seen from the interpreted ``Relay``, the forwarder's only caller: a patched method of
    ``HttpForwarder`` would not be seen where http_proxy runs compiled (devtunnel/native.py). A
    property over ``Relay._forward_http`` hands out the forwarder wrapped; the instance keeps the
    forwarder itself, so nothing is left behind."""
    calls = ForwarderCalls()

    def get(relay: Relay) -> _SpiedForwarder:
        return _SpiedForwarder(relay.__dict__["_forward_http"], calls)

    def put(relay: Relay, forwarder: HttpForwarder) -> None:
        relay.__dict__["_forward_http"] = forwarder

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Relay, "_forward_http", property(get, put), raising=False)
        yield calls


@contextmanager
def task_path_spied(direct: bool) -> Iterator[list[bytes]]:
    """The targets the relay's ASGI task path answers while this lasts (``forwarder_spied``);
    with ``direct`` false the direct path is off, so tasks answer all."""
    with forwarder_spied() as calls, pytest.MonkeyPatch.context() as patch:
        if not direct:
            # The protocol class made when the relay starts gets no direct path. (Not a patch of
            # ``Relay._direct``, which compiled callers would not see.)
            configured = HeadLimitedHttpProtocol.configured

            def without_direct(cls: Any, *args: Any, direct: Any = None, **kwargs: Any) -> Any:
                return configured(*args, **kwargs)

            patch.setattr(HeadLimitedHttpProtocol, "configured", classmethod(without_direct))
        yield calls.tasks
