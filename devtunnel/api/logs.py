"""``GET /api/tunnels/{name}/logs``: the output of the app a tunnel runs.

Without ``follow``: ``{"uri", "tunnel", "lines": [{"time", "stream", "text"}], "dropped"}``, the
newest ``limit`` lines (default 500), only those containing ``contains`` (case-insensitive) if
given. With ``follow=1``: newline-delimited JSON, one line object per line, first the newest
``limit`` kept lines and then each new one as it comes, until the client goes away or the app's
tunnel stops. A follower that reads too slowly loses lines (counted in a ``{"dropped": N}``
object), never the agent's memory: at most ``FOLLOW_QUEUE`` lines wait for one client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from devtunnel.api.service import service_of
from devtunnel.api.plumbing import flag_param, int_param, ok, params, tunnel_of
from devtunnel.export.agent_json import tunnel_uri
from devtunnel.agent.children import LogLine, LogRing

__all__ = ["FOLLOW_QUEUE", "line_json", "routes"]

FOLLOW_QUEUE = 1000
"""Lines at most waiting to be sent to one following client."""
KEEPALIVE = 15.0
"""Seconds of silence after which a following client is sent an empty line (finds a gone client)."""


def line_json(line: LogLine) -> dict[str, Any]:
    """One log line as the API sends it."""
    return {"time": line.time, "stream": line.stream, "text": line.text}


@params("limit", "contains", "follow")
async def app_logs(request: Request) -> Response:
    """``GET /api/tunnels/{name}/logs?limit=&contains=&follow=``."""
    name = tunnel_of(request).name  # by any of its names, as every route under a tunnel
    ring: LogRing = service_of(request).app_log(name)  # NotFoundError -> 404
    limit = int_param(request, "limit", 500)
    contains = request.query_params.get("contains") or None
    if not flag_param(request, "follow"):
        return ok({"uri": tunnel_uri(name) + "/logs", "tunnel": name,
                   "lines": [line_json(line) for line in _newest(ring, contains, limit)],
                   "dropped": ring.dropped})
    return StreamingResponse(_follow(ring, limit, contains), media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _newest(ring: LogRing, contains: str | None, limit: int) -> list[LogLine]:
    kept = ring.lines(contains)
    return kept[-limit:] if limit else kept


async def _follow(ring: LogRing, limit: int, contains: str | None) -> AsyncIterator[bytes]:
    """The kept lines, then each new one. The snapshot and the subscription are taken in one
    step of the loop (the stream starts only after the headers are sent: a line written
    between the request and then would be in neither)."""
    queue: asyncio.Queue[LogLine] = asyncio.Queue(FOLLOW_QUEUE)
    dropped = 0
    needle = contains.lower() if contains else None

    def listener(line: LogLine) -> None:
        nonlocal dropped
        if needle is not None and needle not in line.text.lower():
            return
        if queue.full():
            dropped += 1
            return
        queue.put_nowait(line)

    unsubscribe = ring.subscribe(listener)
    kept = _newest(ring, contains, limit)
    try:
        if kept:
            yield "".join(json.dumps(line_json(line)) + "\n" for line in kept).encode()
        while True:
            try:
                line = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                yield b"\n"
                continue
            batch = [line]
            while not queue.empty() and len(batch) < 256:
                batch.append(queue.get_nowait())
            out = "".join(json.dumps(line_json(item)) + "\n" for item in batch)
            if dropped:
                out += json.dumps({"dropped": dropped}) + "\n"
                dropped = 0
            yield out.encode()
    finally:
        unsubscribe()


routes = [Route("/api/tunnels/{name}/logs", app_logs, methods=["GET"])]
