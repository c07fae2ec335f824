"""The relay's direct path: a request whose whole body came with its head is answered from
callbacks (``DirectExchange``), without an ASGI task, through uvicorn's own response cycle.
``HttpForwarder.direct`` (``http_proxy.py``) decides which requests take it.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from devtunnel.relay.asgi import plain
from devtunnel.relay.http import HeadLimitedHttpProtocol
from devtunnel.relay.http_responses import failure_answer, invalid_status, log_invalid, response_start
from devtunnel.relay.link import AgentLink, RelayStream
from devtunnel.relay.slots import ClientSlots
from devtunnel.rules import Decision

log = logging.getLogger("devtunnel.relay")


def send_now(cycle: RequestResponseCycle, message: dict[str, Any]) -> None:
    """Run uvicorn's ``send`` for ``message`` to its end, which it reaches without waiting
    unless the transport paused writing (the caller checked that it did not)."""
    step = cycle.send(message)  # type: ignore[arg-type]
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()
    raise RuntimeError("the response cycle waited for the transport although it was writable")


class DirectExchange:
    """Answers one forwarded request from callbacks: the stream's ``wake``, the client
    transport's ``resume_writing`` and its loss.

    It does what ``HttpForwarder._respond`` does in a task, through the same uvicorn response
    cycle (which writes the status line, framing and keep-alive), with the same
    back-pressure: body bytes are acknowledged to the agent only once written, and nothing is
    written while the client's transport asks to pause.
    """

    __slots__ = (
        "_tunnel", "_stream", "_cycle", "_client", "_slots", "_ip", "_loop", "_scheduled", "_started", "_done",
        "_decision",
    )

    def __init__(
        self,
        tunnel: AgentLink,
        stream: RelayStream,
        cycle: RequestResponseCycle,
        client: HeadLimitedHttpProtocol,
        slots: ClientSlots,
        ip: str,
        decision: Decision | None = None,
    ) -> None:
        self._decision = decision
        self._tunnel = tunnel
        self._stream = stream
        self._cycle = cycle
        self._client = client
        self._slots = slots
        self._ip = ip
        self._loop = client.loop
        self._scheduled = False
        self._started = False
        self._done = False
        stream.listener = self.wake
        client.lost_callback = stream.on_client_gone
        client.writable_callback = self.wake

    def wake(self) -> None:
        """Run a step once the current callbacks are done (all frames of a message handled)."""
        if not self._scheduled and not self._done:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        if self._done:
            return
        try:
            self._step()
        except (RuntimeError, ValueError) as exc:  # uvicorn refused what the agent sent
            log_invalid(self._tunnel, self._cycle.scope, exc)  # type: ignore[arg-type]
            self._client.abort()
            self._finish(complete=False)
        except Exception:  # a defect must not escape into the loop's callback
            log.exception("tunnel %s: answering stream %d failed", self._tunnel.name, self._stream.id)
            self._client.abort()
            self._finish(complete=False)

    def _step(self) -> None:
        stream = self._stream
        cycle = self._cycle
        if stream.client_gone or cycle.disconnected:
            self._finish(complete=False)
            return
        flow = cycle.flow
        if flow.write_paused:
            return  # resume_writing wakes us
        if not self._started:
            if stream.head is None:
                if stream.failure is not None:
                    for message in failure_answer(self._tunnel, stream.failure):
                        send_now(cycle, message)  # the head waits for the body: one write
                    self._finish(complete=False)
                return
            start = response_start(stream, self._decision)
            if start is None:
                for message in plain(502, invalid_status(self._tunnel, stream)):
                    send_now(cycle, message)
                self._finish(complete=False)
                return
            self._started = True
            send_now(cycle, start)
        chunks = stream.chunks
        while chunks:
            if flow.write_paused:
                return
            data = chunks.popleft()
            last = stream.ended and not chunks
            send_now(cycle, {"type": "http.response.body", "body": data, "more_body": not last})
            if last:
                self._finish(complete=True)
                return
            if not stream.ended:
                self._tunnel.conn.acknowledge(stream.id, len(data))
                self._tunnel.flush()
        if stream.ended:
            send_now(cycle, {"type": "http.response.body", "body": b"", "more_body": False})
            self._finish(complete=True)
        elif stream.failure is not None:
            # The response has started: the only honest signal left is a broken connection.
            self._client.abort()
            self._finish(complete=False)

    def _finish(self, *, complete: bool) -> None:
        self._done = True
        stream = self._stream
        stream.listener = None
        client = self._client
        if client.lost_callback == stream.on_client_gone:
            client.lost_callback = None
        if client.writable_callback == self.wake:
            client.writable_callback = None
        self._slots.give_back(self._tunnel, self._ip)
        self._tunnel.forget(stream, complete=complete)
