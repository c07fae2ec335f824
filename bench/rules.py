"""Rules at the edge: a tunnel with five rules against one without, in the same run.

Usage:
    .venv/bin/python bench/rules.py [--duration 3] [--rounds 2] [--conns 20]

Starts a local service (uvicorn, a plain ASGI app), ``devtunnel relay`` and two agents
(``devtunnel http --no-tui --no-record``) on 127.0.0.1: tunnel ``plain`` without rules and
tunnel ``ruled`` with five (basic-auth, allow-ip, a rate limit far above the load, headers and a
respond that matches nothing). A load generator process keeps ``--conns`` keep-alive
connections busy on one tunnel at a time, in turns (plain, ruled, plain, ruled ...), every step
bounded in time, and prints requests/s of each and the ratio ruled/plain. Needs nothing but
this package.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEVTUNNEL = [sys.executable, "-m", "devtunnel"]
TOKEN = "bench-token"
AUTH = "Basic " + base64.b64encode(b"bench:s3cret").decode()

RULES = """
[[rules]]
action = "basic-auth"
users = ["bench:s3cret"]

[[rules]]
action = "allow-ip"
ips = ["127.0.0.0/8", "::1"]

[[rules]]
action = "rate-limit"
rate = "1000000/s"

[[rules]]
action = "headers"
request.set = { "X-Env" = "bench" }
response.set = { "Strict-Transport-Security" = "max-age=60" }
response.remove = ["Server"]

[[rules]]
match = "path:/never"
action = "respond"
status = 500
"""

LOCAL_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\\n"})
"""

LOAD = r'''
import asyncio, json, sys, time

async def one(port, host, auth, deadline, counts):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (f"GET /bench HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n\r\n").encode()
    try:
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            status = int(head.split(b" ", 2)[1])
            counts[status] = counts.get(status, 0) + 1
    finally:
        writer.close()

async def main(port, host, auth, conns, duration):
    counts = {}
    deadline = time.monotonic() + duration
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one(port, host, auth, deadline, counts) for _ in range(conns))),
                           duration + 30)
    print(json.dumps({"seconds": time.monotonic() - started, "counts": counts}))

asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_line(proc: subprocess.Popen[str], log: Path, prefix: str, timeout: float = 30.0) -> str:
    """Wait for a line starting with ``prefix`` in ``log`` (the process's output, a file: a pipe
    nobody reads would fill and stall the agent's one log line per request)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text().splitlines() if line.startswith(prefix)]
        if lines:
            return lines[0]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"no line starting with {prefix!r} within {timeout}s (exit {proc.poll()}): {log.read_text()}")


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def load(relay_port: int, name: str, conns: int, duration: float) -> float:
    """Requests/s through tunnel ``name``; every answer must be a 200."""
    host = f"{name}.localhost:{relay_port}"
    out = subprocess.run([sys.executable, "-c", LOAD, str(relay_port), host, AUTH, str(conns), str(duration)],
                         capture_output=True, text=True, timeout=duration + 60, check=True)
    result = json.loads(out.stdout)
    counts = {int(k): v for k, v in result["counts"].items()}
    if set(counts) != {200}:
        raise SystemExit(f"tunnel {name}: answers other than 200: {counts}")
    return counts[200] / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per turn (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="turns per tunnel (default 2)")
    parser.add_argument("--conns", type=int, default=20, help="keep-alive connections (default 20)")
    args = parser.parse_args()
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "local_app.py").write_text(LOCAL_APP)
        (folder / "rules.toml").write_text(RULES)
        env = dict(os.environ, XDG_STATE_HOME=str(folder / "state"), PYTHONPATH=os.pathsep.join(
            [str(folder), str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]))
        env.pop("DEVTUNNEL_RELAY", None)
        env.pop("DEVTUNNEL_TOKEN", None)

        def start(*command: str) -> tuple[subprocess.Popen[str], Path]:
            log = folder / f"out-{len(procs)}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
                                        stdin=subprocess.DEVNULL)
            procs.append(proc)
            return proc, log

        try:
            local_port = free_port()
            start(sys.executable, "-m", "uvicorn", "local_app:app", "--port", str(local_port), "--log-level",
                  "warning", "--no-access-log", "--http", "httptools")
            wait_port(local_port)
            relay_port = free_port()
            wait_line(*start(*DEVTUNNEL, "relay", "--listen", f"127.0.0.1:{relay_port}", "--token", TOKEN),
                      "Relay listening")
            agent = [*DEVTUNNEL, "http", str(local_port), "--relay", f"ws://127.0.0.1:{relay_port}", "--token", TOKEN,
                     "--no-tui", "--no-record", "--api-port", "0"]
            wait_line(*start(*agent, "--name", "plain"), "Forwarding")
            wait_line(*start(*agent, "--name", "ruled", "--rules", str(folder / "rules.toml")), "Forwarding")
            for name in ("plain", "ruled"):  # warm up both
                load(relay_port, name, args.conns, 0.5)
            results: dict[str, list[float]] = {"plain": [], "ruled": []}
            for _ in range(args.rounds):
                for name in ("plain", "ruled"):
                    results[name].append(load(relay_port, name, args.conns, args.duration))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    plain = sum(results["plain"]) / len(results["plain"])
    ruled = sum(results["ruled"]) / len(results["ruled"])
    print(f"plain tunnel:            {plain:8.0f} req/s  ({', '.join(f'{r:.0f}' for r in results['plain'])})")
    print(f"tunnel with five rules:  {ruled:8.0f} req/s  ({', '.join(f'{r:.0f}' for r in results['ruled'])})")
    print(f"ratio ruled/plain:       {ruled / plain:8.3f}  (target: at least 0.90)")


if __name__ == "__main__":
    main()
