"""Realistic exchanges and a real local HTTP service for the agent API and CLI tests."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devtunnel.capture.model import Exchange, new_id
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.store import Store
from devtunnel.agent.service import AgentService
from devtunnel.api.app import serve_api
from tests.kit import exchanges as kit
from tests.kit.servers import Received, Reply, http_server

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_at(seconds: float) -> str:
    """A ULID for that moment with fresh random bits (``new_id`` is monotonic: ids made together share prefixes)."""
    value = (int(seconds * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


HOSTILE_PATH = "/x\x1b]0;pwned\x07\x1b[2J[bold red]boom[/]$(touch /tmp/p);`id`|&;"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


@dataclass
class Seen:
    """What the local service received: (method, path, headers, body) per request."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@contextmanager
def echo_service() -> Iterator[tuple[str, Seen]]:
    """A real ``http.server`` on 127.0.0.1 that answers every request with a JSON echo of it."""
    seen = Seen()

    def echo(request: Received) -> Reply:
        seen.requests.append((request.method, request.path, request.lower_headers(), request.body))
        return Reply.json({"method": request.method, "path": request.path, "size": len(request.body)})

    with http_server(echo) as service:
        yield service.url, seen


def make_exchange(
    *,
    tunnel: str = "payments",
    method: str = "POST",
    target: bytes = b"/webhooks/stripe",
    req_headers: list[tuple[str, str]] | None = None,
    req_body: bytes = b'{"type":"invoice.paid","id":"evt_1"}',
    status: int | None = 200,
    resp_headers: list[tuple[str, str]] | None = None,
    resp_body: bytes = b'{"ok":true}',
    target_url: str = "http://127.0.0.1:9",
    started_at: float | None = None,
    error: str | None = None,
    replay_of: str | None = None,
) -> Exchange:
    """One finished exchange shaped like real webhook traffic."""
    started = time.time() if started_at is None else started_at
    headers = req_headers if req_headers is not None else [
        ("Host", f"{tunnel}.localhost"),
        ("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)"),
        ("Content-Type", "application/json"),
        ("Stripe-Signature", "t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"),
        ("Content-Length", str(len(req_body))),
    ]
    response = None
    if status is not None:
        rh = resp_headers if resp_headers is not None else [("Content-Type", "application/json"), ("Content-Length", str(len(resp_body)))]
        response = kit.make_response(status, rh, resp_body)
    return kit.make_exchange(
        method, target, headers, req_body, response,
        id=ulid_at(started) if started_at is not None else new_id(),
        tunnel=tunnel,
        started_at=started,
        remote_addr="203.0.113.7:52100",
        target_url=target_url,
        ttfb=0.004,
        duration=0.0123,
        error=error,
        error_message="connection refused" if error else "",
        replay_of=replay_of,
    )


def sample_exchanges(target_url: str = "http://127.0.0.1:9") -> list[Exchange]:
    """Five exchanges one second apart: JSON webhook, hostile path, binary body, 500, failed."""
    base = time.time() - 60
    return [
        make_exchange(started_at=base, target_url=target_url),
        make_exchange(started_at=base + 1, method="GET", target=HOSTILE_PATH.encode(), req_body=b"", target_url=target_url,
                      req_headers=[("Host", "payments.localhost"), ("X-Evil", "\x1b[31mred\x1b[0m")]),
        make_exchange(started_at=base + 2, tunnel="uploads", method="PUT", target=b"/avatar.png", req_body=PNG,
                      req_headers=[("Host", "uploads.localhost"), ("Content-Type", "image/png"), ("Content-Length", str(len(PNG)))],
                      resp_body=PNG, resp_headers=[("Content-Type", "image/png")], target_url=target_url),
        make_exchange(started_at=base + 3, target=b"/webhooks/stripe?retry=1", status=500, resp_body=b"Internal Server Error",
                      resp_headers=[("Content-Type", "text/plain")], target_url=target_url),
        make_exchange(started_at=base + 4, target=b"/health", method="GET", req_body=b"", status=None, error="local_refused",
                      target_url=target_url),
    ]


@dataclass
class Agent:
    """An in-process agent service with its API, recording into a real store, and a local echo service."""

    port: int
    service: AgentService
    store: Store
    client: httpx.AsyncClient
    target: str
    seen: Seen


@asynccontextmanager
async def running_agent(tmp_path: Path) -> AsyncIterator[Agent]:
    """An ``AgentService`` (embedded relay) with its API on a free port and an echo service as target."""
    store = Store(tmp_path / "captures.db")
    recorder = Recorder(store)
    service = AgentService(store=store, recorder=recorder)
    await service.start()
    with echo_service() as (target, seen):
        server, port = await serve_api(service, port=0, events_interval=0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
            try:
                yield Agent(port, service, store, client, target, seen)
            finally:
                await server.stop()
                await service.stop()
                recorder.close()
                store.close()
