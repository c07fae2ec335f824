"""The relay's WebSocket protocol, with the limits an agent connection lives under.

``GuardedWebSocketProtocol`` is ``DeadPeerWebSocketProtocol`` (``http.py``) plus:

- Every WebSocket starts **unadmitted**: its messages may be at most ``prelogin_max_size``
  bytes (a larger one is refused with close code 1009 before it is buffered), and a peer
  that does not read what it is sent (its transport asks to pause: e.g. the pongs to a flood
  of pings) is dropped at once. Nothing the relay sends before WELCOME comes near the
  transport's high-water mark.
- The relay calls ``admitted()`` once it welcomed an agent: messages may then be as large as
  ``ws_max_size``, and the agent is dropped when its socket stays full without draining a
  byte for ``stall_timeout`` seconds (an agent that stopped reading holds the relay's memory;
  a slow one keeps draining). ``opened()`` gives a public WebSocket the ordinary limits.
- A public WebSocket's messages are held whole (uvicorn joins the frames; the relay passes a
  message on only as fast as the agent grants credit), so what all public WebSockets hold
  together is counted (``HeldMessages``): from the bytes of a message being received to the
  client's next ``receive()``, which comes once the relay passed the message on. One that grows
  beyond ``MESSAGE_FLOOR`` while the relay holds more than its ceiling is closed with 1013
  (try again later): without it a client with a few hundred WebSockets each sending 64 MiB to
  a service that does not read held gigabytes.
- ``abort()`` is how the relay cuts a public WebSocket whose stream it shed for holding too
  much its client had not read (``link.AgentLink.shed``): a close frame with 1013, which waits
  behind what the client has not read, and the connection dropped if the client did not read
  up to it within ``close_grace`` seconds. Without it the WebSocket stayed open (and its write
  buffer held) until the client left or a ping went unanswered.
- ``cut_if_unread()`` is how the relay stops (``Relay.stop``): a public WebSocket whose client
  has not read what was written to it is dropped at once. uvicorn's shutdown would close it
  politely, and the close waits behind what the client does not read: uvicorn then waited its
  whole graceful timeout and cancelled the relay's task sending to it, logging a traceback.
- While the socket is full, pings are not answered: each pong would only grow the buffer
  the peer is not reading (RFC 6455 5.5.3 lets an endpoint skip pongs to earlier pings).
- ``on_writable`` is called when the socket drained below its low-water mark.
- It keeps the place of the HTTP connection it upgraded among the open public connections of
  its client's address (``descriptors.OpenConnections``) until it closes; an agent's gives it
  back once ``admitted()`` (``--connections-per-token`` bounds those).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from devtunnel.relay.descriptors import OpenConnections
from devtunnel.relay.http import DeadPeerWebSocketProtocol
from devtunnel.relay.pending import DROPPED_PENDING, PendingConnections
from devtunnel.values.sizes import format_size

log = logging.getLogger("devtunnel.relay")

PRELOGIN_MAX_SIZE = 64 << 10
"""Largest WebSocket message accepted before the agent was welcomed (a HELLO is far smaller)."""
MESSAGE_FLOOR = 64 << 10
"""Bytes of messages a public WebSocket may hold whatever the others hold (``HeldMessages``)."""
CLOSE_GRACE = 2.0
"""Seconds a public WebSocket cut by ``abort`` has to read up to its close frame before its
connection is dropped."""
SHED_REASON = "the relay holds too much this client has not read; try again later"
"""The reason of the 1013 ``abort`` closes a public WebSocket with."""


class HeldMessages:
    """Bytes of public WebSockets' messages the relay holds, all together, within ``limit``."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class GuardedWebSocketProtocol(DeadPeerWebSocketProtocol):
    """uvicorn's WebSocket protocol with pre-login limits and a stall watch (module docstring).

    Configure with ``configured()``.
    """

    prelogin_max_size: int = PRELOGIN_MAX_SIZE
    stall_timeout: float = 15.0
    close_grace: float = CLOSE_GRACE
    held_messages: HeldMessages = HeldMessages(256 << 20)
    pending: PendingConnections | None = None
    """Where a WebSocket counts until it is ``admitted()`` or ``opened()`` (``relay.pending``):
    handed over from the HTTP connection it upgraded."""
    open_connections: OpenConnections | None = None
    """Where it counts among its address's open connections (``adopt_open``), until it closes or is admitted."""
    _open_key: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.max_message_size = self.prelogin_max_size
        self.on_writable: Callable[[], None] | None = None
        self._admitted = False
        self._opened = False
        self._stall_timer: asyncio.TimerHandle | None = None
        self._drop_timer: asyncio.TimerHandle | None = None  # (abort: the close frame's grace)
        self._stall_mark = 0
        self._held = 0  # bytes of this WebSocket's messages counted in held_messages
        self._queued: deque[int] = deque()  # sizes of the messages queued for receive()
        self._taken = 0  # size of the message receive() returned last (the relay is passing it on)

    @classmethod
    def configured(
        cls, prelogin_max_size: int, stall_timeout: float, held_limit: int = 256 << 20,
        pending: PendingConnections | None = None,
        connections: OpenConnections | None = None,
    ) -> type[GuardedWebSocketProtocol]:
        """A subclass with these limits, to pass as ``ws=`` to ``uvicorn.Config``; its WebSockets
        share one ``HeldMessages`` of ``held_limit`` bytes, count in ``pending`` until admitted,
        and in ``connections`` until closed (an agent's: until admitted)."""
        attrs = {
            "prelogin_max_size": prelogin_max_size, "stall_timeout": stall_timeout,
            "held_messages": HeldMessages(held_limit), "pending": pending, "open_connections": connections,
        }
        return type(cls.__name__, (cls,), attrs)

    # -- what the relay tells us ---------------------------------------------------------
    def admitted(self) -> None:
        """The peer is a welcomed agent: full message size, and the stall watch."""
        self._admitted = True
        self.conn.max_message_size = self.config.ws_max_size
        if self.pending is not None:
            self.pending.release(self)
        self._give_back_open()
        if not self.writable.is_set():
            self._arm_stall_watch()

    def opened(self) -> None:
        """The peer is a public WebSocket client: the relay's ordinary limits."""
        self._opened = True
        self.conn.max_message_size = self.config.ws_max_size
        if self.pending is not None:
            self.pending.release(self)

    def adopt_open(self, key: str) -> None:
        """Hold the place among the open connections (``key``) of the HTTP connection it upgraded."""
        self._open_key = key

    def _give_back_open(self) -> None:
        key = self._open_key
        if key is not None and self.open_connections is not None:
            self._open_key = None
            self.open_connections.closed(key)

    def drop_pending(self) -> None:
        """Dropped to make room for newer connections (``PendingConnections``) before its HELLO
        was accepted: a close frame with 1013 (try again later), written to a socket with room
        for it, and the connection cut at once (it holds nothing worth a grace)."""
        if not self.close_sent and self.handshake_complete and not self.transport.is_closing():
            self.conn.send_close(1013, DROPPED_PENDING.strip())
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
        self.transport.abort()

    def abort(self) -> None:
        """Cut this public WebSocket: the relay shed its stream (``link.Abortable``). Close
        with 1013 (``SHED_REASON``) and stop reading; the client has ``close_grace`` seconds to
        read what was written before the close frame, then the connection is dropped with
        whatever it did not read. The relay's task sending to it (waiting for the client to
        read) ends with the connection."""
        if not self.close_sent and self.handshake_complete and not self.transport.is_closing():
            self.frames = []
            self.conn.send_close(1013, SHED_REASON)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1013, "reason": SHED_REASON})
        self.transport.close()
        if self._drop_timer is None and not self.disconnected:
            self._drop_timer = self.loop.call_later(self.close_grace, self.transport.abort)

    def close_unread(self, data: bytes, code: int) -> None:
        """End an agent's connection while it does not read (the transport asks to pause): the
        binary message ``data`` (its GOAWAY) and a close frame with ``code`` are written at once,
        behind what it has not read, and the connection is dropped if it did not read up to them
        within ``close_grace`` seconds. (``send()`` would wait for it to read first.)"""
        if not self.close_sent and self.handshake_complete and not self.transport.is_closing():
            if data:
                self.conn.send_binary(data)
            self.conn.send_close(code)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
        self.transport.close()
        if self._drop_timer is None and not self.disconnected:
            self._drop_timer = self.loop.call_later(self.close_grace, self.transport.abort)

    def cut_if_unread(self) -> bool:
        """The relay is stopping: drop this public WebSocket at once if what was written to it
        waits for its client to read (a close frame would wait behind it). The relay's task
        sending to it ends with the connection. Returns whether it was cut."""
        if not self._opened or self.disconnected:
            return False
        if self.writable.is_set() and not self.transport.get_write_buffer_size():
            return False
        self.transport.abort()
        return True

    # -- transport flow control -----------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._admitted:
            self._arm_stall_watch()
        elif not self._opened:
            log.info("dropped %s before login: it does not read what it is sent", self._peer())
            self.transport.abort()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_stall_watch()
        callback = self.on_writable
        if callback is not None:
            callback()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_stall_watch()
        if self.pending is not None:
            self.pending.release(self)
        self._give_back_open()
        if self._drop_timer is not None:
            self._drop_timer.cancel()
            self._drop_timer = None
        self._queued.clear()
        self._taken = 0
        self._count(0)
        super().connection_lost(exc)
        callback, self.on_writable = self.on_writable, None
        if callback is not None:
            callback()

    def handle_ping(self) -> None:
        if self.writable.is_set():
            super().handle_ping()
        else:
            self.conn.data_to_send()  # the pongs websockets queued: dropped, see the module docstring

    # -- what a public WebSocket holds --------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._opened:
            return
        self._recount()
        held = self.held_messages
        if held.used > held.limit and self._held > MESSAGE_FLOOR and not self.transport.is_closing():
            self.peer_errors.log(
                "held-messages", logging.WARNING,
                "closed public WebSocket %s with 1013: WebSockets hold %s of messages (at most %s)",
                self._peer(), format_size(held.used), format_size(held.limit),
            )
            self.frames = []
            self.conn.send_close(1013, "the relay holds too many messages; try again later")
            self.handle_parser_exception()
            self._queued.clear()
            self._taken = 0
            self._count(0)

    def send_receive_event_to_app(self) -> None:
        size = sum(len(frame) for frame in self.frames)
        queued = self.queue.qsize()
        super().send_receive_event_to_app()
        if self._opened and self.queue.qsize() > queued:
            self._queued.append(size)

    async def receive(self) -> Any:
        if self._opened:  # the relay asks for the next message once it passed the last one on
            self._taken = 0
            self._recount()
        message = await super().receive()
        if message["type"] == "websocket.receive" and self._queued:
            self._taken = self._queued.popleft()  # (counted already, as queued)
        return message

    def _recount(self) -> None:
        """Count what this WebSocket holds now: the message being received, those queued for
        ``receive()`` and the one the relay is passing on (nothing once it is closing)."""
        if self.transport.is_closing():
            self._count(0)
            return
        receiving = len(self.conn.reader.buffer) + sum(len(frame) for frame in self.frames)
        self._count(receiving + sum(self._queued) + self._taken)

    def _count(self, held: int) -> None:
        """Make this WebSocket count ``held`` bytes in ``held_messages``."""
        self.held_messages.used += held - self._held
        self._held = held

    # -- the stall watch ----------------------------------------------------------------
    def _arm_stall_watch(self) -> None:
        if self._stall_timer is None and not self.transport.is_closing():
            self._stall_mark = self.transport.get_write_buffer_size()
            self._stall_timer = self.loop.call_later(self.stall_timeout, self._stall_check)

    def _cancel_stall_watch(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _stall_check(self) -> None:
        self._stall_timer = None
        if self.writable.is_set() or self.transport.is_closing():
            return
        held = self.transport.get_write_buffer_size()
        if held < self._stall_mark:  # it drained something: slow, not stuck
            self._arm_stall_watch()
            return
        log.warning(
            "dropped agent %s: it read nothing for %g s (%s waiting for it)",
            self._peer(), self.stall_timeout, format_size(held),
        )
        self.transport.abort()

    def _peer(self) -> str:
        client = self.client
        return f"{client[0]}:{client[1]}" if client else "?"
