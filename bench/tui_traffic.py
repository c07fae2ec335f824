"""Does an open, busy inspector slow the tunnel? Headless and with the inspector, same run.

Usage:
    .venv/bin/python bench/tui_traffic.py [--duration 5] [--rounds 2]

Starts nginx (as ``bench/tunnel.py`` does), then alternately ``devtunnel http PORT --no-tui``
(headless) and ``devtunnel http PORT`` with the inspector open in a real terminal (tmux,
120x40, following live traffic), each on its embedded relay, and loads the tunnel with wrk at
50 connections. Prints requests/s and p50 for both and the ratio inspector/headless (the goal:
within 20 %, i.e. a ratio of at least 0.8). Needs wrk, nginx and tmux.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tunnel import DEVTUNNEL, WRK_LUA, free_port, nginx, wrk  # noqa: E402


def wait_tunnel(url: str, host: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, headers={"Host": host})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the tunnel at {url} (Host {host}) did not answer within {timeout}s")


def run_once(backend: int, work: Path, lua: Path, duration: int, inspector: bool, n: int) -> dict[str, float]:
    port, name = free_port(), f"bench{n}"
    state = work / f"state{n}"
    env = dict(os.environ, XDG_STATE_HOME=str(state))
    cmd = [DEVTUNNEL, "http", f"127.0.0.1:{backend}", "--name", name, "--port", str(port)]
    session = f"devtunnel-bench-{os.getpid()}-{n}"
    proc: subprocess.Popen[bytes] | None = None
    if inspector:
        shell = " ".join(f"{k}={v}" for k, v in (("XDG_STATE_HOME", state),)) + " " + " ".join(cmd)
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", shell], check=True)
    else:
        log = open(work / f"agent{n}.log", "wb")
        proc = subprocess.Popen([*cmd, "--no-tui", "--api-port", "0"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url, host = f"http://127.0.0.1:{port}/", f"{name}.localhost:{port}"
        wait_tunnel(url, host)
        wrk(url, host, 50, 1, lua)  # warm-up
        result = wrk(url, host, 50, duration, lua)
        if inspector:  # the screen really is following the traffic
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
            result["following"] = float("following" in screen)
        return result
    finally:
        if inspector:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--rounds", type=int, default=2, help="headless/inspector pairs (default 2)")
    args = ap.parse_args()
    for tool in ("wrk", "tmux"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing")
    work = Path(tempfile.mkdtemp(prefix="devtunnel-tuibench-"))
    work.chmod(0o755)
    lua = work / "report.lua"
    lua.write_text(WRK_LUA)
    backend = free_port()
    server = nginx(work, backend, 1 << 20)
    headless: list[dict[str, float]] = []
    shown: list[dict[str, float]] = []
    try:
        for r in range(args.rounds):
            headless.append(run_once(backend, work, lua, args.duration, False, 2 * r))
            shown.append(run_once(backend, work, lua, args.duration, True, 2 * r + 1))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    h = statistics.median(x["rps"] for x in headless)
    s = statistics.median(x["rps"] for x in shown)
    print(f"\n## Tunnel throughput with the inspector open, {os.cpu_count()} CPUs, wrk -c50 -d{args.duration}s\n")
    print("| round | headless req/s | inspector req/s | headless p50 ms | inspector p50 ms |\n|---|---:|---:|---:|---:|")
    for i, (a, b) in enumerate(zip(headless, shown), 1):
        print(f"| {i} | {a['rps']:,.0f} | {b['rps']:,.0f} | {a['p50_ms']:.2f} | {b['p50_ms']:.2f} |")
    print(f"\nmedian inspector/headless: {s / h:.3f} (goal: at least 0.8)")
    if not all(x.get("following") for x in shown):
        print("note: the inspector was not following live traffic in every round")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
