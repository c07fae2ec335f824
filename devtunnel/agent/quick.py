"""The quick path: a request without a body answered from the local connection's callbacks.

Most requests are small and their answers come in one read. For those, ``QuickAnswer`` sends
the response on from the callback that received it, without a task: see its docstring for
when it hands the request to the stream's task instead (``Forwarder.handle``, ``forward.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from devtunnel.agent.forward import Forwarder, Start, head_refused
from devtunnel.agent.local_pool import LocalConnection
from devtunnel.agent.local_response import NO_BODY_STATUSES, BadResponse, LocalResponse
from devtunnel.agent.recording import ExchangeCapture
from devtunnel.agent.stream import AgentStream
from devtunnel.errors import ProtocolError
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import RequestReceived

__all__ = ["QuickAnswer", "QUICK_MAX"]

log = logging.getLogger("devtunnel.agent")

QUICK_MAX = 64 * 1024
"""Bytes of an unfinished response head a ``QuickAnswer`` lets pile up before it hands the
request to a task."""


class QuickAnswer:
    """Answers a request without a body from the local connection's callbacks.

    ``Forwarder.start`` wrote the request head to a kept-alive connection. When the whole
    response is there (in one read or a few), its head and body go into the stream at once,
    the connection goes back to the pool, and ``done`` is called: no task, no future, no
    timer per read.

    Until the response head is complete nothing is taken from the connection: anything this
    cannot answer (a head longer than ``QUICK_MAX``, a connection that closed or broke, invalid
    HTTP, the head timeout, a first body part larger than the send window) is handed untouched
    to ``hand_off``, which runs the ordinary task from the start and sees every byte.

    A head that arrives without the end of its response (a stream of events, a long poll, a
    slow download) is sent on at once, never held for the rest: the body then follows from
    here while it comes whole in one more read, else ``hand_off`` gives the task the parsed
    response (``Start.response``) to carry on with, from the bytes not sent yet.
    """

    __slots__ = ("forwarder", "stream", "head", "cap", "start", "_done", "_hand_off", "_response")

    def __init__(
        self,
        forwarder: Forwarder,
        stream: AgentStream,
        head: RequestReceived,
        cap: ExchangeCapture,
        start: Start,
        *,
        done: Callable[[QuickAnswer], None],
        hand_off: Callable[[QuickAnswer], None],
    ) -> None:
        conn = start.conn
        assert conn is not None and head.end_stream
        self.forwarder = forwarder
        self.stream = stream
        self.head = head
        self.cap = cap
        self.start = start
        self._done = done
        self._hand_off = hand_off
        conn.set_alarm(forwarder.head_timeout, self.give_up)  # the head timeout
        self._response: LocalResponse | None = None
        """The response once its head was sent on; its parser has taken every byte read since."""
        conn.listener = self._on_data

    def give_up(self) -> None:
        """Hand the request to a task (from the head timeout, or when this cannot answer)."""
        if self._detach():
            self._hand_off(self)

    def cancel(self) -> None:
        """The relay reset the stream or the tunnel is going: drop the local connection."""
        conn = self.start.conn
        if not self._detach():
            return
        assert conn is not None
        self.start.conn = None
        conn.abort()
        self.cap.fail(*self.stream.cut("before the response ended"))
        self._done(self)

    def _detach(self) -> bool:
        """Stop listening; False if that was done already."""
        conn = self.start.conn
        if conn is None or conn.listener != self._on_data:
            return False
        conn.listener = None
        conn.clear_alarm()
        return True

    def _on_data(self) -> None:
        conn = self.start.conn
        try:
            if self._response is None:
                self._on_head_data()
            else:
                self._on_body_data(self._response)
        except Exception as exc:  # a defect must cost one stream, never the tunnel
            log.exception("tunnel %s: stream %d failed", self.forwarder.tunnel, self.stream.stream_id)
            self._fail(f"internal error: {exc!r}", "internal error in the agent")
        if self.start.conn is not None and conn is not None:
            # The response is not finished (here or in the task it went to): the service may be
            # waiting for our ACK to send the rest (LocalConnection.acknowledge).
            conn.acknowledge()

    def _on_head_data(self) -> None:
        conn = self.start.conn
        assert conn is not None
        data = conn.peek()
        response = conn.spare_response
        if response is None:
            response = LocalResponse(self.head.method == b"HEAD")
        else:
            conn.spare_response = None
            response.again(self.head.method == b"HEAD")
        try:
            if data:
                response.feed(data)
        except BadResponse:
            self.give_up()  # the task parses the same bytes and answers 502
            return
        if not response.head_done:
            if conn.at_eof or len(data) > QUICK_MAX:
                self.give_up()
            return
        body = response.take_body()
        if response.status in NO_BODY_STATUSES or self.head.method == b"HEAD":
            body = b""
        elif len(body) > self.stream.send_window or (conn.at_eof and not response.complete):
            self.give_up()  # the task waits for credit, or finds out how the connection ended
            return
        # From here on the response is ours: nothing is handed over untouched any more.
        conn.discard()
        try:
            self._send_head(response, end_stream=response.complete and not body)
        except ProtocolError as exc:
            head_refused(self.stream, self.cap, exc)
            self._detach()
            self.start.conn = None
            conn.abort()
            self._done(self)
            return
        if response.complete:
            self._finish(conn, response, body)  # which clears the head timeout
            return
        conn.clear_alarm()  # the head is here: its timeout is over
        self._response = response
        if body:
            self._carry_on(response, body)

    def _on_body_data(self, response: LocalResponse) -> None:
        conn = self.start.conn
        assert conn is not None
        data = conn.peek()
        if not data:
            if conn.at_eof:
                self._carry_on(response, b"")  # the task reads the end, or the error, and says so
            return
        conn.discard()
        try:
            response.feed(data)
        except BadResponse as exc:
            self._fail(str(exc), str(exc))
            return
        body = response.take_body()
        if response.complete and len(body) <= self.stream.send_window:
            self._finish(conn, response, body)
        elif body or conn.at_eof:
            self._carry_on(response, body)

    def _send_head(self, response: LocalResponse, *, end_stream: bool) -> None:
        headers = tuple(response.headers)
        reason = bytes(response.reason)
        self.cap.response_head(response.status, reason, headers, response.version, exact=True)  # the first byte too
        version = response.version.encode("ascii")
        self.stream.send_response(response.status, reason, headers, end_stream=end_stream, http_version=version)

    def _finish(self, conn: LocalConnection, response: LocalResponse, body: bytes) -> None:
        """The whole response is here: send the rest and give the connection back."""
        self._detach()
        self.start.conn = None
        if not response.extra and response.keep_alive:
            conn.spare_response = response  # for the next quick answer on this connection
            if response.stray:
                conn.expect_stray(response.stray)
            self.forwarder.pool.give_back(conn)
        else:
            conn.abort()
        if body:
            self.cap.response_body(body)
            self.stream.send_last(body)
        elif self._response is not None:
            self.stream.send_last(b"")  # the head went without the end of the stream
        self._done(self)

    def _carry_on(self, response: LocalResponse, body: bytes) -> None:
        """The rest of the body takes waiting (for the service or for credit): a task sends it."""
        if self._detach():
            self.start.response = response
            self.start.pending = body
            self._hand_off(self)

    def _fail(self, message: str, reason: str) -> None:
        conn = self.start.conn
        self._detach()
        self.start.conn = None
        if conn is not None:
            conn.abort()
        self.cap.fail("local_error", message)
        self.stream.reset(ErrorCode.LOCAL_ERROR, reason)
        self._done(self)
