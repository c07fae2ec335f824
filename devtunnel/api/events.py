"""``/api/events``: a WebSocket that tells clients what changed, merged and bounded.

Two kinds of JSON message::

    {"type": "exchanges", "ids": ["01J...", ...]}   exchanges committed to the store (new or updated)
    {"type": "tunnel", "tunnel": {...}}             a tunnel changed state (ngrok's tunnel shape)
    {"type": "resync"}                              too much changed to list: read the store again

Commits arrive in bursts (one per recorder transaction), so each client gets at most one
message per ``interval`` (10 a second by default), carrying every id since the last one. A
client that reads slowly never makes the agent buffer without bound: past ``max_ids`` pending
ids they are dropped and the client is told to resync instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from devtunnel.agent.info import TunnelInfo
from devtunnel.api.plumbing import ApiError, params
from devtunnel.api.service import Service
from devtunnel.export.agent_json import tunnel_json

__all__ = ["Outbox", "EventHub", "not_a_websocket"]

log = logging.getLogger(__name__)


@params()
async def not_a_websocket(request: Request) -> Response:
    """A plain HTTP ``GET /api/events`` (curl, a script's HTTP client): say what the route is,
    rather than the 404 of a route that does not exist."""
    raise ApiError(400, f"/api/events is a WebSocket: connect to ws://{request.url.netloc}/api/events "
                        "(a plain HTTP request cannot follow it)")


class Outbox:
    """What one client has yet to be told, merged and bounded. Used from the event loop only."""

    def __init__(self, max_ids: int = 1000) -> None:
        self.max_ids = max_ids
        self._ids: dict[str, None] = {}  # ordered set: an id updated twice is sent once
        self._tunnels: dict[str, dict[str, Any]] = {}  # latest state per tunnel name
        self._resync = False
        self.ready = asyncio.Event()

    def add_ids(self, ids: Iterable[str]) -> None:
        """Queue committed ids; past ``max_ids`` drop them all and owe a resync instead."""
        if not self._resync:
            self._ids.update(dict.fromkeys(ids))
            if len(self._ids) > self.max_ids:
                self._ids.clear()
                self._resync = True
        self.ready.set()

    def add_tunnel(self, tunnel: dict[str, Any]) -> None:
        """Queue a tunnel's new state, replacing any state of it not yet sent."""
        self._tunnels[tunnel["name"]] = tunnel
        self.ready.set()

    def take(self) -> list[dict[str, Any]]:
        """The messages owed now (tunnels first), emptying the outbox."""
        messages: list[dict[str, Any]] = [{"type": "tunnel", "tunnel": t} for t in self._tunnels.values()]
        if self._resync:
            messages.append({"type": "resync"})
        elif self._ids:
            messages.append({"type": "exchanges", "ids": list(self._ids)})
        self._tunnels.clear()
        self._ids.clear()
        self._resync = False
        self.ready.clear()
        return messages


class EventHub:
    """Fans recorder commits and tunnel changes out to every connected ``/api/events`` client.

    It subscribes to the recorder and the service while at least one client is connected, and
    unsubscribes when the last one leaves.

    Args:
        service: the agent service (its ``recorder``, ``subscribe`` and ``tunnels``).
        interval: the least time between two messages to one client, in seconds.
        max_ids: pending ids per client before it is told to resync.
    """

    def __init__(self, service: Service, *, interval: float = 0.1, max_ids: int = 1000) -> None:
        self.service = service
        self.interval = interval
        self.max_ids = max_ids
        self._outboxes: set[Outbox] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # Called from the recorder's writer thread (and possibly from other threads for tunnels).
    def _on_commit(self, ids: list[str]) -> None:
        self._threadsafe(self._publish_ids, list(ids))

    def _on_tunnel(self, info: TunnelInfo) -> None:
        self._threadsafe(self._publish_tunnel, tunnel_json(info))

    def _threadsafe(self, fn: Callable[[Any], None], arg: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, arg)
        except RuntimeError:
            pass  # the loop is closed: the agent is shutting down, nobody is listening

    def _publish_ids(self, ids: list[str]) -> None:
        for box in self._outboxes:
            box.add_ids(ids)

    def _publish_tunnel(self, tunnel: dict[str, Any]) -> None:
        for box in self._outboxes:
            box.add_tunnel(tunnel)

    def _attach(self) -> None:
        self._loop = asyncio.get_running_loop()
        recorder = self.service.recorder
        if recorder is not None:
            self._unsubscribe.append(recorder.subscribe(self._on_commit))
        self._unsubscribe.append(self.service.subscribe(self._on_tunnel))

    def _detach(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        self._loop = None

    @property
    def clients(self) -> int:
        """How many clients are connected."""
        return len(self._outboxes)

    async def serve(self, websocket: WebSocket) -> None:
        """Run one client's connection until it closes."""
        await websocket.accept()
        box = Outbox(self.max_ids)
        if not self._outboxes:
            self._attach()
        self._outboxes.add(box)
        # A new client first learns the tunnels as they are now.
        for info in self.service.tunnels():
            box.add_tunnel(tunnel_json(info))
        pump = asyncio.create_task(self._pump(websocket, box))
        drain = asyncio.create_task(self._drain(websocket))
        try:
            await asyncio.wait({pump, drain}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pump.cancel()
            drain.cancel()
            await asyncio.gather(pump, drain, return_exceptions=True)
            self._outboxes.discard(box)
            if not self._outboxes:
                self._detach()

    async def _pump(self, websocket: WebSocket, box: Outbox) -> None:
        try:
            while True:
                await box.ready.wait()
                messages = box.take()
                for message in messages:
                    await websocket.send_text(json.dumps(message))
                # The pause is what merges a burst: commits during it wait in the outbox.
                await asyncio.sleep(self.interval * len(messages))
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.debug("events client gone: %s", exc)

    @staticmethod
    async def _drain(websocket: WebSocket) -> None:
        # Clients have nothing to say; reading is how a disconnect is noticed.
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
