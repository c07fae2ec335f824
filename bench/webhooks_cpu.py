"""The agent's CPU per request for signed webhook deliveries, with their secrets known against without.

Usage:
    .venv/bin/python bench/webhooks_cpu.py [--rounds 4] [--duration 3] [--conns 50] [--deliveries 1000]

One run starts a local receiver (answers 200 "ok"), then in turns, round by round, ``devtunnel
relay`` and ``devtunnel http --no-tui --relay ...`` twice: once with ``STRIPE_WEBHOOK_SECRET`` and
``GITHUB_WEBHOOK_SECRET`` set (every delivery is verified: HMAC, timestamp, JSON event type and
id, duplicates in the store), once without (the same deliveries are recognised and recorded as
unverified). The load is ``--conns`` keep-alive connections sending signed Stripe and GitHub
deliveries (realistic bodies of about 1.5 KB, ``--deliveries`` distinct delivery ids, so some are
retries) from this process for ``--duration`` seconds. The agent's CPU time (all its threads:
the recorder's thread, which judges, included) comes from ``/proc/PID/stat`` around the load.

It prints each round, the medians, and the ratio of CPU per request with secrets to without.
Loopback only; every process it starts is stopped by PID. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import tunnel as bench  # noqa: E402  (bench/tunnel.py: free_port, wait_port, wait_forwarding, stop_all)
from cpu_ab import cpu_seconds  # noqa: E402

from devtunnel.capture.model import Headers  # noqa: E402
from devtunnel.webhooks import Delivery  # noqa: E402
from devtunnel.webhooks.providers import GitHub, Stripe  # noqa: E402

STRIPE_SECRET = "whsec_bench_0123456789abcdef"
GITHUB_SECRET = "bench-github-secret"
SECRET_ENV = {"STRIPE_WEBHOOK_SECRET": STRIPE_SECRET, "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}


def deliveries(count: int, host: str) -> list[bytes]:
    """``count`` signed deliveries as raw HTTP/1.1 requests, alternating Stripe and GitHub."""
    now = time.time()
    out: list[bytes] = []
    for n in range(count):
        if n % 2 == 0:
            body = json.dumps({
                "id": f"evt_bench_{n:06d}", "object": "event", "api_version": "2024-06-20", "created": int(now),
                "type": "invoice.paid", "livemode": False, "pending_webhooks": 1,
                "data": {"object": {"id": f"in_{n:06d}", "object": "invoice", "amount_due": 2000, "amount_paid": 2000,
                                    "currency": "usd", "customer": "cus_bench", "status": "paid",
                                    "lines": {"data": [{"id": "il_1", "amount": 2000, "description": "x" * 600}]}}},
            }).encode()
            headers = Stripe().sign(Delivery("POST", "", Headers([("Content-Type", "application/json"),
                                                                   ("User-Agent", "Stripe/1.0")]), body),
                                    STRIPE_SECRET, now)
            path = "/webhooks/stripe"
        else:
            body = json.dumps({"action": "opened", "number": n, "pull_request": {"title": "y" * 900}}).encode()
            headers = GitHub().sign(Delivery("POST", "", Headers([
                ("Content-Type", "application/json"), ("User-Agent", "GitHub-Hookshot/abc"),
                ("X-GitHub-Event", "pull_request"), ("X-GitHub-Delivery", f"d-{n:06d}")]), body), GITHUB_SECRET, now)
            path = "/webhooks/github"
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out.append(head.encode() + b"\r\n" + body)
    return out


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def load(port: int, requests: list[bytes], conns: int, duration: float) -> tuple[int, int]:
    """Send ``requests`` in turn on ``conns`` keep-alive connections for ``duration`` s; (sent, non-2xx)."""
    deadline = time.monotonic() + duration
    counts = [0, 0]

    async def one(start: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = start
        try:
            while time.monotonic() < deadline:
                writer.write(requests[i % len(requests)])
                i += conns
                status = await _read_response(reader)
                counts[0] += 1
                counts[1] += not 200 <= status < 300
        finally:
            writer.close()

    await asyncio.gather(*(one(c) for c in range(conns)))
    return counts[0], counts[1]


RECEIVER = """
import asyncio, sys
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = 0
            for line in head.split(b"\\r\\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nContent-Type: text/plain\\r\\n\\r\\nok")
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def one_round(secrets: bool, args: argparse.Namespace, work: Path, backend_port: int) -> dict[str, float]:
    relay_port = bench.free_port()
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV and not k.startswith("DEVTUNNEL_")}
    env.update(XDG_STATE_HOME=str(work / f"state-{relay_port}"), XDG_CONFIG_HOME=str(work / "config"),
               PYTHONPATH=str(ROOT))
    if secrets:
        env.update(SECRET_ENV)
    python = sys.executable
    relay = subprocess.Popen([python, "-m", "devtunnel", "relay", "--listen", f"127.0.0.1:{relay_port}",
                              "--domain", "localhost", "--token", "bench"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, cwd=work)
    procs: list[subprocess.Popen[bytes]] = [relay]
    try:
        bench.wait_port(relay_port)
        out = work / f"agent-{relay_port}.out"
        with open(out, "wb") as f:
            agent = subprocess.Popen([python, "-m", "devtunnel", "http", f"127.0.0.1:{backend_port}", "--relay",
                                      f"ws://127.0.0.1:{relay_port}", "--token", "bench", "--name", "bench", "--no-tui",
                                      "--api-port", "0"], stdout=f, stderr=subprocess.STDOUT, env=env, cwd=work)
        procs.append(agent)
        bench.wait_forwarding(agent, out)
        requests = deliveries(args.deliveries, f"bench.localhost:{relay_port}")
        asyncio.run(load(relay_port, requests, 4, 0.5))  # warm-up
        before = cpu_seconds(agent.pid)
        sent, failed = asyncio.run(load(relay_port, requests, args.conns, args.duration))
        time.sleep(0.5)  # the recorder's last batch (written within 20 ms) belongs to this load
        used = cpu_seconds(agent.pid) - before
        return {"rps": sent / args.duration, "agent_us": used / sent * 1e6, "failed": failed}
    finally:
        bench.stop_all(procs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds of load per configuration and round")
    ap.add_argument("--conns", type=int, default=50, help="keep-alive connections (default 50)")
    ap.add_argument("--deliveries", type=int, default=1000, help="distinct signed deliveries sent in turn")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 20 or not 0 < args.duration <= 30:
        raise SystemExit("keep it bounded: 1-20 rounds of at most 30 s")
    work = Path(tempfile.mkdtemp(prefix="devtunnel-webhooks-bench-"))
    backend_port = bench.free_port()
    backend = subprocess.Popen([sys.executable, "-c", RECEIVER, str(backend_port)])
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    try:
        bench.wait_port(backend_port)
        for n in range(args.rounds):
            for secrets in ((False, True) if n % 2 == 0 else (True, False)):  # alternate who goes first
                row = one_round(secrets, args, work, backend_port)
                results[secrets].append(row)
                print(f"round {n + 1}, {'secrets   ' if secrets else 'no secrets'}: {row['rps']:,.0f} req/s, "
                      f"agent {row['agent_us']:.0f} us/req, {row['failed']:.0f} non-2xx", flush=True)
    finally:
        bench.stop_all([backend])
    med = {k: statistics.median(r["agent_us"] for r in rows) for k, rows in results.items()}
    rps = {k: statistics.median(r["rps"] for r in rows) for k, rows in results.items()}
    print(f"\nmedians over {args.rounds} rounds, {args.conns} connections, signed Stripe and GitHub deliveries:")
    print("| agent | req/s | agent us/req |\n|---|---:|---:|")
    print(f"| no secrets (recognised, unverified) | {rps[False]:,.0f} | {med[False]:.0f} |")
    print(f"| secrets set (verified) | {rps[True]:,.0f} | {med[True]:.0f} |")
    print(f"CPU per request, secrets / no secrets: {med[True] / med[False]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
