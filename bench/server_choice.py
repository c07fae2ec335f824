"""Why the relay's public side runs on uvicorn + httptools: the two candidates, same run.

Usage:
    .venv/bin/python bench/server_choice.py [--duration 5]

Starts a minimal app on each server (a 1 KiB response, the same work the relay's public side
does before it hands the request to the tunnel: read the head, stream a body back) in its own
process with uvloop, loads each with wrk (50 and 1 connections) and prints requests/s, p50 and
the ratio aiohttp/uvicorn. Needs wrk (``../shared/bench-peers/setup.sh``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from tunnel import WRK_LUA, free_port, wait_port  # noqa: E402

UVICORN_APP = r"""
import sys, uvicorn
BODY = b"a" * 1024
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/html"), (b"content-length", b"1024")]})
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            log_level="error", access_log=False, lifespan="off")
"""

AIOHTTP_APP = r"""
import sys, asyncio, uvloop
from aiohttp import web
BODY = b"a" * 1024
async def handler(request):
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/html", "Content-Length": "1024"})
    await resp.prepare(request)
    await resp.write(BODY)
    await resp.write_eof()
    return resp
app = web.Application()
app.router.add_route("*", "/{tail:.*}", handler)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def load(port: int, conns: int, duration: int, lua: str) -> tuple[float, float]:
    out = subprocess.run(["wrk", f"-t{min(2, conns)}", f"-c{conns}", f"-d{duration}s", "--latency", "-s", lua,
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=duration + 30).stdout
    m = re.search(r'"requests":(\d+),"duration_us":(\d+),"p50_us":(\d+)', out)
    if not m:
        raise SystemExit(f"wrk printed no result:\n{out}")
    return int(m.group(1)) / (int(m.group(2)) / 1e6), int(m.group(3)) / 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    args = ap.parse_args()
    lua = "/tmp/devtunnel-server-choice.lua"
    open(lua, "w").write(WRK_LUA)
    results = {}
    for name, code in (("uvicorn+httptools", UVICORN_APP), ("aiohttp", AIOHTTP_APP)):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-c", code, str(port)], stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            load(port, 50, 1, lua)
            time.sleep(0.2)
            results[name] = (load(port, 50, args.duration, lua), load(port, 1, args.duration, lua))
        finally:
            proc.terminate()
            proc.wait(10)
    print("| server | req/s c50 | p50 ms c50 | req/s c1 | p50 ms c1 |\n|---|---:|---:|---:|---:|")
    for name, ((r50, p50), (r1, p1)) in results.items():
        print(f"| {name} | {r50:,.0f} | {p50:.3f} | {r1:,.0f} | {p1:.3f} |")
    u, a = results["uvicorn+httptools"], results["aiohttp"]
    print(f"\naiohttp/uvicorn req/s: c50 {a[0][0] / u[0][0]:.2f}, c1 {a[1][0] / u[1][0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
