"""One tunnel stream as the agent's handlers see it: events in, flow-controlled sends out.

The session (``session.py``) owns the sans-IO ``Connection`` and the WebSocket to the relay.
It puts each stream's events on that stream's queue and wakes it when the relay gives send
credit; a handler (``forward.py``, ``quick.py``, ``local_ws.py``) only talks to its ``AgentStream``.
The relay has its own object for its end of each stream, and the protocol's ``Connection`` keeps
each stream's state; this is only the agent's end.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from devtunnel.capture.model import ErrorKind
from devtunnel.errors import StreamClosedError
from devtunnel.protocol.agent_side import AgentConnection
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import Event, Fields

__all__ = ["Link", "AgentStream", "DRAIN_AFTER"]

DRAIN_AFTER = 64 * 1024
"""A send of at least this many bytes (or one that does not end the message) waits until the
relay socket took it: that keeps reading the local service in step with the tunnel. A small
final send does not wait, so a short response costs no extra trip through the event loop."""


class Link(Protocol):
    """What a stream needs from its tunnel connection."""

    conn: AgentConnection
    held: int
    """Bytes the relay sent on the connection's streams that were not acknowledged yet
    (``session.Session``: bounded by ``HELD_REQUESTS``)."""

    def kick(self, *, ending: bool = False) -> None:
        """Send whatever the connection has queued, soon (``ending``: the stream queued its last frame)."""

    async def drained(self) -> None:
        """Wait until everything queued so far was handed to the relay socket."""


class AgentStream:
    """The agent's end of a stream the relay opened for one public request.

    Attributes:
        stream_id: the protocol's stream id.
        events: ``DataReceived`` / ``WebSocketMessageReceived`` / ``WebSocketClosed`` events
            for this stream, in order. Flow control bounds what can pile up here: the relay
            sends no more than the window we give back with ``acknowledge``.
        reset_code: the ``ErrorCode`` the relay reset this stream with, or None.
        held: bytes of ``DataReceived`` and ``WebSocketMessageReceived`` events the session put
            here and ``acknowledge`` did not give back yet (counted in the link's ``held``).
        shed: why the stream was dropped for its size: by the session, for holding the most
            (``Session.shed``), or by the relay (a RESET with TOO_LARGE); or "".
        timed_out: why the relay gave up on the public client's request body (a RESET with
            CLIENT_TIMEOUT: the client got 408), as the relay said it; or "".
        stopped: why the agent cut the stream when it stopped its tunnel cleanly (``Session.leave``:
            quit, Ctrl-C, SIGTERM, a tunnel stopped through the API); or "".
    """

    __slots__ = ("stream_id", "reset_code", "held", "shed", "timed_out", "stopped", "_events", "_link", "_window")

    def __init__(self, link: Link, stream_id: int) -> None:
        self.stream_id = stream_id
        self.reset_code: int | None = None
        self.held = 0
        self.shed = ""
        self.timed_out = ""
        self.stopped = ""
        self._link = link
        # Made when first needed: a request answered at once never waits for either.
        self._events: asyncio.Queue[Event] | None = None
        self._window: asyncio.Event | None = None

    @property
    def events(self) -> asyncio.Queue[Event]:
        events = self._events
        if events is None:
            events = self._events = asyncio.Queue()
        return events

    # -- called by the session -----------------------------------------------------
    def window_opened(self) -> None:
        """The relay gave more send credit (a WindowUpdated event)."""
        if self._window is not None:
            self._window.set()

    # -- called by handlers ----------------------------------------------------------
    def send_response(
        self, status: int, reason: bytes, headers: Fields, *, end_stream: bool, http_version: bytes = b"1.1"
    ) -> None:
        """Send the response head.

        It does not wait for the socket: the head of a small response then shares one
        WebSocket message with its body. ``send_data`` is where back-pressure applies.
        """
        self._link.conn.send_response(
            self.stream_id, status, reason, headers, end_stream=end_stream, http_version=http_version
        )
        self._link.kick(ending=end_stream)

    async def send_data(self, data: bytes | memoryview, *, end_stream: bool = False) -> None:
        """Send body bytes, waiting for send credit whenever the window is used up.

        Raises:
            StreamClosedError: the stream was closed while waiting for credit.
        """
        conn = self._link.conn
        view = memoryview(data)
        while True:
            window = await self._wait_window() if view.nbytes else 0
            n = min(window, view.nbytes)
            last = n == view.nbytes
            # The whole rest goes as it is; a part is sent as a view: no copy either way.
            chunk = view if last else view[:n]
            conn.send_data(self.stream_id, chunk, end_stream=end_stream and last)
            self._link.kick(ending=end_stream and last)
            if last and end_stream and n < DRAIN_AFTER:
                return
            await self._link.drained()
            if last:
                return
            view = view[n:]

    @property
    def send_window(self) -> int:
        """Bytes that may be sent now without waiting for credit."""
        return self._link.conn.send_window(self.stream_id)

    def send_last(self, data: bytes) -> None:
        """Send the last body bytes at once; they must fit ``send_window``."""
        self._link.conn.send_data(self.stream_id, data, end_stream=True)
        self._link.kick(ending=True)

    async def send_ws_message(self, data: bytes, *, text: bool) -> None:
        """Send one WebSocket message, as several fragments if it is larger than the window."""
        conn = self._link.conn
        view = memoryview(data)
        while True:
            window = await self._wait_window() if view.nbytes else 0
            n = min(window, view.nbytes)
            last = n == view.nbytes
            conn.send_ws_message(self.stream_id, bytes(view[:n]), text=text, fin=last)
            self._link.kick()
            await self._link.drained()
            if last:
                return
            view = view[n:]

    def send_ws_close(self, code: int, reason: str = "") -> None:
        """Close our side of a WebSocket stream."""
        self._link.conn.send_ws_close(self.stream_id, code, reason)
        self._link.kick()

    def acknowledge(self, n: int, *, keep: bool = False) -> None:
        """Give ``n`` consumed bytes of credit back to the relay (``keep``: they are still held
        here, as a WebSocket message's fragments are until the whole message went: ``release``
        then stops counting them)."""
        if n:
            link = self._link
            if not keep:
                self.release(n)
            link.conn.acknowledge(self.stream_id, n)
            link.kick()

    def release(self, n: int) -> None:
        """Stop counting ``n`` bytes as held: the local service took them."""
        held = self.held
        if held:  # (0 once the stream was shed or forgotten: its bytes no longer count)
            taken = n if n < held else held
            self.held = held - taken
            self._link.held -= taken

    def cut(self, when: str) -> tuple[ErrorKind, str]:
        """Why the stream's handler was stopped, as its record says it (``when``: "before ..."):
        the relay reset the stream (the public client went away), or the tunnel's connection to
        the relay was lost (``agent_gone``, as the relay records it: the public client was not
        the one who left), or the agent or the relay dropped it for holding too much (``too_large``),
        or the relay gave up on a request body that came too slowly (``client_timeout``: the
        client got 408, not a client that went away), or the agent cut it when it stopped the
        tunnel cleanly (``agent_stopped``: no crash, no broken connection)."""
        if self.shed:
            return "too_large", self.shed
        if self.timed_out:
            return "client_timeout", f"the relay timed out the public client's request body {when}: {self.timed_out}"
        if self.reset_code is not None:
            return "client_gone", f"the public client went away {when}"
        if self.stopped:
            return "agent_stopped", f"{self.stopped} {when}"
        return "agent_gone", f"the connection to the relay was lost {when}"

    def reset(self, code: ErrorCode, reason: str = "") -> None:
        """Abandon the stream (a no-op when it is already closed)."""
        self._link.conn.reset_stream(self.stream_id, code, reason)
        self._link.kick()

    async def _wait_window(self) -> int:
        conn = self._link.conn
        while True:
            if self.reset_code is not None:
                raise StreamClosedError(f"stream {self.stream_id} was reset by the relay")
            window = conn.send_window(self.stream_id)
            if window > 0:
                return window
            if self._window is None:
                self._window = asyncio.Event()
            self._window.clear()
            await self._window.wait()
