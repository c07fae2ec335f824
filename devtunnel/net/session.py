"""One WebSocket connection of a tunnel to its relay, from HELLO to close.

The session owns the sans-IO ``Connection``: it feeds it what the relay sends, hands each
stream's events to that stream, and runs one writer task that sends everything queued as a
single WebSocket message. Each public request runs as its own task (``forward.py`` for HTTP,
``local_ws.py`` for WebSockets); a failure costs that stream, never the tunnel.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from devtunnel import __version__
from devtunnel.errors import AuthError, NameTakenError, ProtocolError, RelayUnreachableError, TunnelError
from devtunnel.net.local_ws import forward_websocket
from devtunnel.net.recording import ExchangeCapture
from devtunnel.net.stream import TunnelStream
from devtunnel.protocol.connection import Connection, ErrorCode, Role
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

if TYPE_CHECKING:
    from devtunnel.net.agent import Tunnel

__all__ = ["Session", "HANDSHAKE_TIMEOUT"]

log = logging.getLogger("devtunnel.agent")

HANDSHAKE_TIMEOUT = 10.0
"""Seconds the relay has to answer the WebSocket upgrade, and then HELLO with WELCOME."""
REQUEST_WINDOW = 4 << 20
"""Request body bytes the relay may send on a stream before the local service took them.

Larger than the protocol's 1 MiB default: with 1 MiB a large upload waited for credit between
batches even on loopback (100 MiB uploads: about 270-360 MiB/s at 1 MiB, 380-510 at 4 MiB)."""


class Session:
    """One WebSocket connection of a tunnel to its relay, from HELLO to close."""

    def __init__(self, tunnel: Tunnel, ws: ClientConnection) -> None:
        self.tunnel = tunnel
        self.ws = ws
        self.conn = Connection(Role.AGENT, initial_window=REQUEST_WINDOW)
        self.streams: dict[int, TunnelStream] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.goaway: GoAway | None = None
        self._dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    # -- Link, for the streams --------------------------------------------------------
    def kick(self) -> None:
        """Have the writer send whatever the connection queued."""
        self._dirty.set()
        self._idle.clear()

    async def drained(self) -> None:
        """Wait until everything queued so far went to the socket."""
        if not self._idle.is_set():
            await self._idle.wait()

    async def _write_loop(self) -> None:
        conn, ws, dirty, idle = self.conn, self.ws, self._dirty, self._idle
        try:
            while True:
                await dirty.wait()
                dirty.clear()
                data = conn.data_to_send()
                if data:
                    # One WebSocket message per batch: frames of many streams share it.
                    await ws.send(data)
                if not dirty.is_set():
                    idle.set()
        except ConnectionClosed:
            pass
        finally:
            # Nothing more can be sent: make sure the reader notices and the session ends.
            if ws.transport is not None:
                ws.transport.abort()

    # -- handshake ----------------------------------------------------------------------
    async def handshake(self, token: str, name: str) -> Welcome:
        """Say HELLO; return the WELCOME. Raises AuthError, NameTakenError or RelayUnreachableError."""
        # Not the target: the relay has no need to know local addresses.
        info: dict[str, object] = {"agent": f"devtunnel/{__version__}"}
        self.conn.send_hello(token, name, info)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                await self.ws.send(self.conn.data_to_send())
                while True:
                    message = await self.ws.recv()
                    if isinstance(message, str):
                        raise RelayUnreachableError("the relay sent text where the tunnel protocol was expected")
                    events = self.conn.receive_data(message)
                    for i, event in enumerate(events):
                        if isinstance(event, Welcome):
                            self._dispatch(events[i + 1 :])
                            return event
                        if isinstance(event, GoAway):
                            raise _goaway_error(event)
        except TimeoutError as exc:
            raise RelayUnreachableError(f"the relay did not answer the handshake in {HANDSHAKE_TIMEOUT:g} s") from exc
        except ConnectionClosed as exc:
            raise RelayUnreachableError(f"the relay closed the connection during the handshake ({exc})") from exc
        except ProtocolError as exc:
            raise RelayUnreachableError(f"the relay broke the tunnel protocol: {exc}") from exc

    # -- serving --------------------------------------------------------------------------
    async def serve(self) -> str:
        """Carry streams until the connection ends; returns why it ended.

        Raises:
            AuthError, NameTakenError: the relay ended the tunnel for good.
        """
        writer = asyncio.create_task(self._write_loop())
        self.kick()
        reason = "the relay closed the connection"
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    reason = "the relay sent text where the tunnel protocol was expected"
                    break
                self._dispatch(self.conn.receive_data(message))
                if self.conn.wants_to_send:  # a PONG or a refusal; otherwise no need to wake the writer
                    self.kick()
        except ConnectionClosed as exc:
            reason = f"the connection to the relay was lost ({exc})"
        except ProtocolError as exc:
            reason = f"the relay broke the tunnel protocol: {exc}"
            try:
                self.conn.send_goaway(ErrorCode.PROTOCOL_ERROR, str(exc))
                await asyncio.wait_for(self.ws.send(self.conn.data_to_send()), 1.0)
            except Exception:  # the connection is being dropped anyway
                pass
        finally:
            writer.cancel()
            await self.close_streams()
            await asyncio.gather(writer, return_exceptions=True)
            await self.ws.close()
        if self.goaway is not None:
            if self.goaway.code in _FINAL_GOAWAYS:
                raise _goaway_error(self.goaway)
            reason = f"the relay is going away: {self.goaway.reason or 'no reason given'}"
        return reason

    async def close_streams(self) -> None:
        """Cancel every stream still running (their exchanges are recorded as cut short)."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def leave(self, reason: str) -> None:
        """Tell the relay we are going (GOAWAY) and close the socket."""
        try:
            self.conn.send_goaway(ErrorCode.NO_ERROR, reason)
            await asyncio.wait_for(self.ws.send(self.conn.data_to_send()), 1.0)
        except Exception:  # the socket may be gone already; closing is all that is left
            pass
        await self.ws.close()

    def _dispatch(self, events: list[Event]) -> None:
        streams = self.streams
        for event in events:
            # Ordered by how often each event arrives.
            if isinstance(event, (DataReceived, WebSocketMessageReceived, WebSocketClosed)):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.events.put_nowait(event)
            elif isinstance(event, WindowUpdated):
                if event.stream_id == 0:
                    for stream in streams.values():
                        stream.window_opened()
                else:
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.window_opened()
            elif isinstance(event, RequestReceived):
                self._open(event)
            elif isinstance(event, StreamReset):
                stream = streams.get(event.stream_id)
                task = self.tasks.get(event.stream_id)
                if stream is not None and task is not None:
                    stream.reset_code = event.code
                    task.cancel()
            elif isinstance(event, GoAway):
                self.goaway = event
                log.info("tunnel %s: the relay is going away: %s", self.tunnel.name, event.reason)

    def _open(self, head: RequestReceived) -> None:
        stream = TunnelStream(self, head.stream_id)
        self.streams[head.stream_id] = stream
        self.tunnel.requests += 1
        self.tasks[head.stream_id] = asyncio.create_task(self._serve_stream(stream, head))

    async def _serve_stream(self, stream: TunnelStream, head: RequestReceived) -> None:
        tunnel = self.tunnel
        cap = ExchangeCapture(tunnel.sink, tunnel.name, head, tunnel.target.url, tunnel.body_cap, live=tunnel.live)
        try:
            if head.websocket:
                await forward_websocket(
                    stream, head, cap, tunnel=tunnel.name, target=tunnel.target,
                    rewrite_host=tunnel.config.host_header == "rewrite", insecure=tunnel.config.insecure,
                )
            else:
                await tunnel.forwarder.handle(stream, head, cap)
        except asyncio.CancelledError:
            pass  # reset by the relay or the session is ending; the handler recorded why
        except Exception as exc:  # a defect must cost one stream, never the tunnel
            log.exception("tunnel %s: stream %d failed", tunnel.name, stream.stream_id)
            cap.fail("local_error", f"internal error: {exc!r}")
            try:
                stream.reset(ErrorCode.LOCAL_ERROR, "internal error in the agent")
            except ProtocolError:
                pass
        finally:
            self.streams.pop(stream.stream_id, None)
            self.tasks.pop(stream.stream_id, None)
            cap.finish()


# GOAWAY codes after which reconnecting cannot help. NO_ERROR on a live connection means the
# relay handed the name to another agent with the same token: taking it back would only start
# a tug of war between the two.
_FINAL_GOAWAYS = frozenset((ErrorCode.AUTH_FAILED, ErrorCode.NAME_TAKEN, ErrorCode.UNSUPPORTED_VERSION, ErrorCode.NO_ERROR))


def _goaway_error(event: GoAway) -> TunnelError:
    reason = event.reason or "no reason given"
    if event.code == ErrorCode.AUTH_FAILED:
        return AuthError(f"the relay refused the token: {reason}")
    if event.code == ErrorCode.NAME_TAKEN:
        return NameTakenError(f"the relay refused the tunnel name: {reason}")
    if event.code == ErrorCode.UNSUPPORTED_VERSION:
        return TunnelError(f"the relay speaks another protocol version: {reason}")
    if event.code == ErrorCode.NO_ERROR:
        return TunnelError(f"the relay ended the tunnel: {reason}")
    return RelayUnreachableError(f"the relay turned the tunnel away: {reason}")
