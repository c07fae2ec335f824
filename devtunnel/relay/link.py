"""One agent's WebSocket at the relay (``AgentLink``): the protocol connection, its writer and
its streams (``RelayStream``). These are the relay's side of a tunnel; the agent's side is
``devtunnel.agent``'s ``Tunnel`` and ``TunnelStream``.

The agent's messages are fed to the sans-IO ``Connection`` in the WebSocket protocol's
callback, and each event goes to the ``RelayStream`` it belongs to. Request handlers queue frames
through the same ``Connection`` and call ``flush()``: everything queued in one turn of the
event loop goes out as a single WebSocket message, from a ``call_soon`` callback, so frames of
many streams share messages; a writer task takes over only while the agent's socket is full.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from devtunnel.errors import ProtocolError
from devtunnel.relay.log import PeerErrorLog
from devtunnel.values.sizes import format_size
from devtunnel.values.terminal import clipped
from devtunnel.values.websocket import sendable_close_reason
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.relay_side import RelayConnection
from devtunnel.protocol.events import (
    DataReceived,
    Event,
    GoAway,
    PongReceived,
    ResponseReceived,
    RulesChanged,
    StreamReset,
    WebSocketClosed,
    WebSocketMessageReceived,
    WindowUpdated,
)

log = logging.getLogger("devtunnel.relay")

MAX_AGENT_TEXT = 200
"""Characters of a text the agent chose (its GOAWAY's reason) a log line keeps (``clipped``):
one agent leaving writes one line, not the megabyte its reason may be."""

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


class DirectSocket(Protocol):
    """An agent WebSocket that can send a message from a plain callback (``relay.http.DeadPeerWebSocketProtocol``)."""

    writable: asyncio.Event
    transport: asyncio.WriteTransport

    def send_now(self, data: bytes) -> bool:
        """Send one binary message now; False while the transport is paused."""


class Abortable(Protocol):
    """A public client's connection the relay can cut (``relay.http.HeadLimitedHttpProtocol``,
    ``relay.ws_guard.GuardedWebSocketProtocol``)."""

    def abort(self) -> None:
        """Cut the connection: an HTTP client's at once, dropping what is not written; a
        WebSocket's with a close frame (1013) it has a moment to read first."""


LAST_WORDS_TIMEOUT = 1.0
"""Seconds to spend sending a GOAWAY and close to an agent on the way out."""
BUDGET_POLL = 0.05
"""Seconds between two looks at the budget while a stream waits for room (a socket that
drains below its high-water mark does so without a callback)."""


async def send_last_words(send: ASGISend, messages: list[dict[str, Any]]) -> None:
    """Send closing messages to an agent that may be gone or not reading, without waiting long."""
    try:
        async with asyncio.timeout(LAST_WORDS_TIMEOUT):
            for message in messages:
                await send(message)
    except Exception as exc:  # gone, or not reading: the heartbeat will drop it
        log.debug("could not finish talking to an agent: %r", exc)


@dataclass(frozen=True, slots=True)
class BodyStalled(StreamReset):
    """The relay's own failure of a stream: the client's request body stopped arriving (the
    client gets 408, ``http_responses.failure_answer``).

    Defined here, in a module compiled with ``StreamReset`` (devtunnel/native.py): mypyc's
    classes cannot be subclassed by interpreted ones (instances of such a subclass cannot be
    made: TypeError), so the class of a ``RelayStream``'s failure is compiled when the events are.
    """


class RelayStream:
    """What the relay knows of one stream of an ``AgentLink``: the response head, queued body, and failure.

    ``chunks`` holds response body bytes (HTTP streams) or ``WebSocketMessageReceived`` /
    ``WebSocketClosed`` events (WebSocket streams), in arrival order; ``held`` counts the bytes
    of the body chunks and messages in it, which the response side gives back with
    ``AgentLink.taken`` as it takes them (``BufferBudget`` bounds them). The fragments of a
    WebSocket message are given back once the whole message was taken: until then the
    response side gathers them (``ws_proxy``), and they still count.

    The response side either awaits ``wait()`` in a task, or sets ``listener``, which ``wake``
    calls instead (``http_direct.DirectExchange``).
    """

    __slots__ = (
        "id", "websocket", "head", "chunks", "held", "ended", "failure", "client_gone", "listener", "client",
        "_waiter", "_window_waiter",
    )

    def __init__(self, stream_id: int, websocket: bool = False) -> None:
        self.id = stream_id
        self.websocket = websocket
        self.head: ResponseReceived | None = None
        self.chunks: deque[Any] = deque()
        self.held = 0
        """Bytes of body and messages in ``chunks``, counted in the link's ``held``."""
        self.ended = False
        self.failure: StreamReset | None = None
        """Set when the agent reset the stream or the tunnel went away."""
        self.client_gone = False
        self.listener: Callable[[], None] | None = None
        """Called by ``wake`` (from inside the tunnel's message callback: it must not block)."""
        self.client: Abortable | None = None
        """The public client's connection (or WebSocket), set by the response side: cut when
        the relay drops the stream for holding too much (``AgentLink.shed``)."""
        self._waiter: asyncio.Future[None] | None = None
        self._window_waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """Wake the response side (something arrived, or the stream failed)."""
        listener = self.listener
        if listener is not None:
            listener()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_window(self) -> None:
        """Wake the request side (send window grew, or the stream failed)."""
        waiter = self._window_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, reset: StreamReset) -> None:
        """Record a failure and wake both sides."""
        if self.failure is None:
            self.failure = reset
        self.wake()
        self.wake_window()

    def on_client_gone(self) -> None:
        """The public client's connection was lost."""
        self.client_gone = True
        self.wake()
        self.wake_window()

    async def wait(self) -> None:
        """Wait until ``wake`` is called."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def wait_window(self) -> None:
        """Wait until ``wake_window`` is called."""
        self._window_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._window_waiter
        finally:
            self._window_waiter = None


class BufferBudget:
    """The bytes the relay may hold on their way to agents: per agent, and for all together.

    What counts is what the relay holds for an agent: payload queued on its connection and not
    yet written (``Connection.queued_data``) plus its socket's write buffer. A request body
    takes room before it is queued (``AgentLink.sendable``); a stream that finds none waits (its
    ``wake_window``) until an agent's socket drained or a tunnel closed, and reads nothing more
    from its public client meanwhile: the client is slowed down, never buffered.

    It also bounds the response bytes the relay holds on their way from agents: received
    (``RelayStream.chunks``) and not yet taken to be written to a public client. Each agent may
    send a stream's whole window (4 MiB) before its client reads a byte, so these are counted
    as they arrive and are taken (``AgentLink.handle``, ``AgentLink.taken``: a few additions,
    no scan), per agent (``per_agent_responses``) and for all together (``total_responses``).
    Past either, ``shed`` drops the stream holding the most (of that agent, or of the agent
    holding the most): a RESET to its agent, its public client cut (a WebSocket closed with
    1013: ``ws_guard``), one line in the peer log.
    A link that closed while its streams still hold bytes counts until they are forgotten.
    """

    def __init__(
        self,
        per_agent: int,
        total: int,
        per_agent_responses: int = 64 << 20,
        total_responses: int = 256 << 20,
        peer_errors: PeerErrorLog | None = None,
    ) -> None:
        self.per_agent = per_agent
        self.total = total
        self.per_agent_responses = per_agent_responses
        self.total_responses = total_responses
        self.responses = 0
        """Response bytes held for all agents now (the sum of their links' ``held``)."""
        self.peer_errors = peer_errors
        self._tunnels: set[AgentLink] = set()
        self._holders: set[AgentLink] = set()  # open links, and closed ones still holding response bytes
        self._waiting: set[RelayStream] = set()
        self._poll: asyncio.TimerHandle | None = None

    def add(self, tunnel: AgentLink) -> None:
        """Count ``tunnel``'s bytes from now on."""
        self._tunnels.add(tunnel)
        self._holders.add(tunnel)

    def let_go(self, tunnel: AgentLink) -> None:
        """``tunnel`` closed and holds no response bytes any more: forget it."""
        self._holders.discard(tunnel)

    def shed(self, tunnel: AgentLink) -> None:
        """``tunnel``'s message left the response bytes held past a ceiling: drop the streams
        holding the most until they are within both again."""
        while True:
            if tunnel.held > self.per_agent_responses:
                over, now, limit, whose = tunnel, tunnel.held, self.per_agent_responses, "for this agent"
            elif self.responses > self.total_responses:
                over = max(self._holders, key=_held, default=tunnel)
                now, limit, whose = self.responses, self.total_responses, "for all agents"
            else:
                return
            stream = max(over.streams.values(), key=_stream_held, default=None)
            if stream is None or not stream.held:
                return  # (not reached: the bytes counted are in the streams)
            held = stream.held
            reason = (
                f"the relay holds {format_size(now)} of responses public clients have not read "
                f"(at most {format_size(limit)} {whose}); this stream held the most: {format_size(held)}"
            )
            if self.peer_errors is not None:
                self.peer_errors.log(
                    "held-responses", logging.WARNING,
                    "tunnel %s: reset stream %d, the one holding the most response bytes its client had not read"
                    " (%s): the relay held %s of them %s (at most %s)",
                    over.name, stream.id, format_size(held), format_size(now), whose, format_size(limit),
                )
            over.shed(stream, reason)

    def remove(self, tunnel: AgentLink) -> None:
        """Stop counting ``tunnel`` (it closed) and let waiting streams look again."""
        self._tunnels.discard(tunnel)
        self.release()

    @property
    def used(self) -> int:
        """Bytes held for all agents now."""
        return sum(tunnel.buffered for tunnel in self._tunnels)

    def room(self, tunnel: AgentLink) -> int:
        """Bytes that may still be queued for ``tunnel`` (0 or less: none)."""
        return min(self.per_agent - tunnel.buffered, self.total - self.used)

    def wait(self, stream: RelayStream) -> None:
        """Call ``stream.wake_window`` once there may be room again."""
        self._waiting.add(stream)
        if self._poll is None:
            self._poll = asyncio.get_running_loop().call_later(BUDGET_POLL, self.release)

    def release(self) -> None:
        """Wake every waiting stream: room was freed (each looks again)."""
        poll, self._poll = self._poll, None
        if poll is not None:
            poll.cancel()
        waiting, self._waiting = self._waiting, set()
        for stream in waiting:
            stream.wake_window()


def _held(tunnel: AgentLink) -> int:
    return tunnel.held


def _stream_held(stream: RelayStream) -> int:
    return stream.held


class AgentLink:
    """The relay's link to one connected agent holding tunnel ``name`` (a pool has several).

    Args:
        name: the tunnel name.
        token: the token the agent authenticated with (names belong to tokens).
        conn: the protocol connection, past its handshake.
        send: the ASGI ``send`` of the agent's WebSocket.
        peer: the agent's address, for log lines.
        instance: the agent instance id from its HELLO (None if it sent none).
        budget: the relay's buffer budget this tunnel's request bodies draw on (None: unlimited).
        pooled: the agent asked to share its name (``--pool``): a request it refuses may go to
            another member (``HttpForwarder.resend``), so its small request bodies are kept.
    """

    def __init__(
        self,
        name: str,
        token: str,
        conn: RelayConnection,
        send: ASGISend,
        peer: str,
        *,
        instance: str | None = None,
        budget: BufferBudget | None = None,
        pooled: bool = False,
    ) -> None:
        self.name = name
        self.pooled = pooled
        self.token = token
        self.conn = conn
        self.peer = peer
        self.instance = instance
        self.budget = budget
        self.heard = 0
        """Messages received from the agent so far (proof of life while a ping is out)."""
        self._probe: asyncio.Future[bool] | None = None
        self._probe_payload = b""
        self.streams: dict[int, RelayStream] = {}
        self.held = 0
        """Response bytes its streams hold (``RelayStream.held``), within ``budget``."""
        self.ready: list[Callable[[], None]] | None = None
        """While ``handle`` hands out a message's events: the response steps they woke, run
        once all are handed out (``DirectExchange.wake``); None otherwise."""
        self.closed = False
        self.draining = False
        """GOAWAY was sent or received: no new streams, open ones may finish."""
        self.end_reason: str | None = None
        """Why the connection is ending, once a GOAWAY was sent or received."""
        self.end_code: ErrorCode | None = None
        """The code of the GOAWAY the relay ended it with (``disconnect``); None otherwise."""
        self._send = send
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._flush_pending = False
        self.socket: DirectSocket | None = None
        """The agent's WebSocket protocol, when it can send without a coroutine (``send_now``)."""
        self.on_rules: Callable[[dict[str, Any]], None] | None = None
        """Called with the rules of a RULES frame (the agent changed its tunnel's rules)."""
        if budget is not None:
            budget.add(self)

    # -- memory ------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Bytes held here on their way to the agent: queued payload plus the socket's write buffer."""
        socket = self.socket
        held = socket.transport.get_write_buffer_size() if socket is not None else 0
        return self.conn.queued_data + held

    @property
    def room(self) -> int:
        """Payload bytes that may be queued for the agent now, within the buffer budget."""
        budget = self.budget
        return budget.room(self) if budget is not None else self.conn.new_stream_window

    def sendable(self, stream: RelayStream) -> int:
        """Payload bytes ``stream`` may queue now: its send window, within the buffer budget.

        When it returns 0, ``stream.wake_window`` is called once that may have changed (credit
        from the agent, or room in the budget).
        """
        window = self.conn.send_window(stream.id)
        budget = self.budget
        if budget is None or not window:
            return window
        room = budget.room(self)
        if room <= 0:
            budget.wait(stream)
            return 0
        return min(window, room)

    def taken(self, stream: RelayStream, n: int) -> None:
        """The response side took ``n`` bytes out of ``stream.chunks`` (to write them to the
        public client): the relay no longer counts them as held."""
        stream.held -= n
        self.held -= n
        budget = self.budget
        if budget is not None:
            budget.responses -= n

    def shed(self, stream: RelayStream, reason: str) -> None:
        """Drop what ``stream`` holds, reset it towards the agent with ``reason`` and cut its
        public client (``BufferBudget.shed``: it held the most past a ceiling)."""
        self.streams.pop(stream.id, None)  # what still comes for it is not held
        stream.chunks.clear()
        stream.ended = False  # what was dropped must not pass for a complete response
        self.taken(stream, stream.held)
        if not self.closed:
            self.conn.reset_stream(stream.id, ErrorCode.TOO_LARGE, reason)
            self.flush()
        stream.fail(StreamReset(stream.id, int(ErrorCode.TOO_LARGE), reason))
        client = stream.client
        if client is not None:
            client.abort()

    def on_writable(self) -> None:
        """The agent's socket drained below its low-water mark: there may be room again."""
        if self.budget is not None:
            self.budget.release()

    # -- liveness ----------------------------------------------------------------------
    async def answers(self, timeout: float) -> bool:
        """Whether the agent is alive: it answers a PING, or sends anything, within ``timeout``.

        Callers asking while a PING is out share it.
        """
        if self.closed or self.draining:
            return False
        probe = self._probe
        if probe is None:
            payload = os.urandom(8)
            try:
                self.conn.ping(payload)
            except ProtocolError:
                return False
            probe = self._probe = self._loop.create_future()
            self._probe_payload = payload
            heard = self.heard

            def expire() -> None:
                if not probe.done():
                    probe.set_result(self.heard != heard and not self.closed)

            timer = self._loop.call_later(timeout, expire)

            def settled(_: asyncio.Future[bool]) -> None:
                timer.cancel()
                self._probe = None

            probe.add_done_callback(settled)
            self.flush()
        return await asyncio.shield(probe)

    def _answered(self, result: bool) -> None:
        probe = self._probe
        if probe is not None and not probe.done():
            probe.set_result(result)

    # -- writing ---------------------------------------------------------------------
    def start_writer(self) -> None:
        """Start the task that sends queued frames when they cannot go at once."""
        self._writer = self._loop.create_task(self._write_loop(), name=f"relay-writer-{self.name}")

    def flush(self) -> None:
        """Send whatever the connection has queued, once the current callbacks are done.

        Frames queued by all the streams in one turn of the event loop go out as one
        WebSocket message, written from a plain callback; only when the agent's socket is
        full (or no ``socket`` is set) does the writer task take over.
        """
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        socket = self.socket
        if self.closed or socket is None or not socket.writable.is_set():
            self._wake.set()
            return
        data = self.conn.data_to_send()
        if not data:
            return
        try:
            socket.send_now(data)  # True: writable was checked just above
        except Exception as exc:  # uvicorn raises its own ClientDisconnected / OSError here
            log.debug("tunnel %s: write failed: %r", self.name, exc)
            self.close("the agent connection broke")

    async def _write_loop(self) -> None:
        wake = self._wake
        conn = self.conn
        send = self._send
        while not self.closed:
            await wake.wait()
            wake.clear()
            socket = self.socket
            if socket is not None:
                # The data is taken only once it can be written: a flush that runs first
                # sends it itself, so messages never overtake each other.
                await socket.writable.wait()
                self._flush_now()
                continue
            data = conn.data_to_send()
            if data:
                try:
                    await send({"type": "websocket.send", "bytes": data})
                except Exception as exc:  # uvicorn raises its own ClientDisconnected / OSError here
                    log.debug("tunnel %s: write failed: %r", self.name, exc)
                    self.close("the agent connection broke")
                    return

    # -- streams -----------------------------------------------------------------------
    def open(self, stream: RelayStream) -> None:
        """Track a stream opened on ``conn``."""
        self.streams[stream.id] = stream

    def forget(self, stream: RelayStream, *, complete: bool) -> None:
        """Stop tracking ``stream``; reset it on the wire unless it completed both ways."""
        self.streams.pop(stream.id, None)
        if stream.held:
            stream.chunks.clear()
            self.taken(stream, stream.held)
        if self.closed and not self.held and self.budget is not None:
            self.budget.let_go(self)
        if not complete and not self.closed:
            self.conn.reset_stream(stream.id, ErrorCode.CANCEL, "the public client went away")
            self.flush()

    def handle(self, events: list[Event]) -> None:
        """Hand each received event to its stream; then run the response steps they woke
        (``ready``: ``DirectExchange.wake``), once every event of the message is handed out.

        Then the response bytes still held are looked at (``BufferBudget``): what the steps
        wrote to their clients at once does not count, however many streams' frames the message
        carried."""
        self.heard += 1
        streams = self.streams
        ready: list[Callable[[], None]] = []
        self.ready = ready
        try:
            for event in events:
                # Ordered by how often each event arrives.
                if isinstance(event, DataReceived):
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        data = event.data
                        if data:
                            stream.chunks.append(data)
                            self._hold(stream, len(data))
                        if event.end_stream:
                            stream.ended = True
                        listener = stream.listener  # (stream.wake, without a call on the direct path)
                        if listener is not None:
                            listener()
                        else:
                            stream.wake()
                elif isinstance(event, ResponseReceived):
                    stream = streams.get(event.stream_id)
                    # Interim 1xx answers (other than 101 on a WebSocket) are not forwarded.
                    if stream is not None and (event.status >= 200 or stream.websocket):
                        stream.head = event
                        if event.end_stream:
                            stream.ended = True
                        listener = stream.listener
                        if listener is not None:
                            listener()
                        else:
                            stream.wake()
                elif isinstance(event, WindowUpdated):
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.wake_window()
                    elif event.stream_id == 0:
                        for stream in streams.values():
                            stream.wake_window()
                elif isinstance(event, (WebSocketMessageReceived, WebSocketClosed)):
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.chunks.append(event)
                        if isinstance(event, WebSocketMessageReceived):
                            self._hold(stream, len(event.data))
                        stream.wake()
                elif isinstance(event, StreamReset):
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.fail(event)
                elif isinstance(event, RulesChanged):
                    if self.on_rules is not None:
                        self.on_rules(event.rules)
                elif isinstance(event, PongReceived):
                    if event.payload == self._probe_payload:
                        self._answered(True)
                elif isinstance(event, GoAway):
                    self.draining = True
                    self.end_reason = f"it left: {clipped(event.reason, MAX_AGENT_TEXT) or 'no reason given'}"
        finally:
            self.ready = None
            for step in ready:
                step()
            budget = self.budget
            if budget is not None and (
                self.held > budget.per_agent_responses or budget.responses > budget.total_responses
            ):
                budget.shed(self)

    def _hold(self, stream: RelayStream, n: int) -> None:
        """Count ``n`` response bytes ``stream`` received (``handle`` looks at the ceilings)."""
        stream.held += n
        self.held += n
        budget = self.budget
        if budget is not None:
            budget.responses += n

    # -- ending ------------------------------------------------------------------------
    def goaway(self, code: ErrorCode, reason: str) -> None:
        """Tell the agent this connection ends, and why; stop taking new streams."""
        self.draining = True
        try:
            self.conn.send_goaway(code, reason)
        except ProtocolError:
            return
        self.flush()

    def close(self, reason: str) -> None:
        """Mark the tunnel gone and fail every open stream with ``reason``."""
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        self._answered(False)
        failure = StreamReset(0, int(ErrorCode.CANCEL), reason)
        holding = {}
        for stream in list(self.streams.values()):
            stream.fail(failure)
            if stream.held:
                holding[stream.id] = stream
        # Streams still holding response bytes stay, to be shed or forgotten (BufferBudget).
        self.streams = holding
        if self.budget is not None:
            self.budget.remove(self)
            if not self.held:
                self.budget.let_go(self)

    async def disconnect(self, code: ErrorCode, reason: str, ws_code: int) -> None:
        """End this connection from the relay's side: GOAWAY, fail streams, close the WebSocket."""
        self.end_reason, self.end_code = reason, code
        self.goaway(code, reason)
        self.close(reason)
        await self.finish_writing({"type": "websocket.close", "code": ws_code, "reason": sendable_close_reason(reason)})

    async def finish_writing(self, *then: dict[str, Any]) -> None:
        """Stop the writer, send what is still queued (a GOAWAY), then the messages ``then``."""
        await self.stop_writer()
        data = self.conn.data_to_send()
        messages = [{"type": "websocket.send", "bytes": data}] if data else []
        await send_last_words(self._send, [*messages, *then])

    async def stop_writer(self) -> None:
        """Stop the writer task."""
        self.closed = True
        if self.budget is not None:
            self.budget.remove(self)  # (close() does it too; whichever comes first)
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
