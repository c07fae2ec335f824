"""A small HTTP backend and keep-alive load client, for machines without nginx and wrk.

    python bench/pyload.py serve PORT                      # 200 with a 1 KiB body to every GET, keep-alive
    python bench/pyload.py load URL HOST CONNS SECONDS [REQUESTS]   # prints one line: PYLOADJSON {...}

With REQUESTS the client sends exactly that many requests in all (or fewer if SECONDS run out
first), for measures that count work per request.

Both run on uvloop when it is installed and parse only what they need (a request ends at its
blank line; a response carries Content-Length), so they cost little CPU next to the tunnel they
load. The client's figures have the same keys as ``tunnel.wrk``'s. Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

BODY = b"a" * 1024
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY


class _Backend(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * n)  # type: ignore[attr-defined]


def _content_length(head: bytes) -> int:
    """The Content-Length of a lower-cased response head, 0 without one."""
    at = head.find(b"content-length:")
    if at < 0:
        return 0
    end = head.find(b"\r\n", at)
    return int(head[at + 15 : end if end > 0 else None])


class _Client(asyncio.Protocol):
    def __init__(self, request: bytes, latencies: list[float], stop_at: float, done: asyncio.Future[None],
                 budget: list[int]) -> None:
        self.request, self.latencies, self.stop_at, self.done = request, latencies, stop_at, done
        self.budget = budget  # [requests still to send], shared by all the clients
        self.buf = b""
        self.need = -1
        self.errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        if self.budget[0] <= 0:
            self.transport.close()
            return
        self.budget[0] -= 1
        self.sent = time.perf_counter()
        self.transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end].lower()
                if not head.startswith(b"http/1.1 2"):
                    self.errors += 1
                length = _content_length(head)
                self.need = end + 4 + length
            if len(self.buf) < self.need:
                return
            self.buf = self.buf[self.need:]
            self.need = -1
            now = time.perf_counter()
            self.latencies.append(now - self.sent)
            if now >= self.stop_at:
                self.transport.close()
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _load(url: str, host: str, conns: int, seconds: float, requests: int | None = None) -> dict[str, float]:
    parts = urlsplit(url)
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: pyload\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    start = time.perf_counter()
    clients = []
    budget = [requests if requests is not None else 1 << 62]
    for _ in range(conns):
        done: asyncio.Future[None] = loop.create_future()
        _, proto = await loop.create_connection(
            lambda d=done: _Client(request, latencies, start + seconds, d, budget), parts.hostname, parts.port)
        clients.append(proto)
    await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), seconds + 30)
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0

    return {"rps": len(latencies) / elapsed, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "errors": sum(c.errors for c in clients), "requests": len(latencies)}


async def _serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Backend, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> int:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    if len(sys.argv) < 3 or sys.argv[1] not in ("serve", "load") or (sys.argv[1] == "load" and len(sys.argv) < 6):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    if sys.argv[1] == "serve":
        asyncio.run(_serve(int(sys.argv[2])))
    else:
        url, host, conns, seconds = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        requests = int(sys.argv[6]) if len(sys.argv) > 6 else None
        print("PYLOADJSON " + json.dumps(asyncio.run(_load(url, host, conns, seconds, requests))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
