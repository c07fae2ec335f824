"""CPU per request of relay and agent, and latency, for two (or more) source trees in turns.

Usage:
    .venv/bin/python bench/cpu_ab.py BASE_TREE NEW_TREE [--rounds 6] [--duration 3] [--conns 1] [--pin]

A tree is a directory holding a ``devtunnel`` package (a ``git worktree`` of another commit,
say). Each round starts nginx, then ``devtunnel relay`` and ``devtunnel http ... --no-tui`` from
each tree in turn (``python -m devtunnel`` with that tree first on ``sys.path``, run from a
scratch directory so the current one cannot shadow it), loads the tunnel with wrk, and reads
the processes' CPU time from ``/proc/PID/stat`` around the load. Per round and as medians over
rounds it prints: the wrk p50 and req/s, the relay's and the agent's CPU microseconds per
request (the agent's includes its recorder thread, also shown alone), and the same load direct to nginx as the
baseline of that round.

Latency on a shared 2-core machine moves 10-20 % from minute to minute; CPU per request moves
less, and alternating the trees round by round spreads the drift over both. ``--pin`` puts
relay and agent on CPU 1 and wrk and nginx on CPU 0, which steadies the figures further (the
side-by-side benchmark with other tunnels does not pin).

Uses wrk and nginx when installed (``../shared/bench-peers/setup.sh`` installs them), else
``bench/pyload.py``'s backend and load client (``--load py`` forces them). Loopback only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tunnel as bench  # noqa: E402  (bench/tunnel.py: nginx, wrk, free_port, wait_port)

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def side_threads_cpu_seconds(pid: int) -> float:
    """utime + stime of a process's threads other than its main thread, in seconds (in a loaded
    agent that is its recorder thread, writing to SQLite: nothing else works beside the loop)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        if task.name == str(pid):
            continue
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def pinned(cpu: int | None, cmd: list[str]) -> list[str]:
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


PYLOAD = Path(__file__).resolve().parent / "pyload.py"


def use_py(args: argparse.Namespace) -> bool:
    return args.load == "py" or not (shutil.which("wrk") and os.path.exists("/usr/sbin/nginx"))


def load(args: argparse.Namespace, url: str, host: str | None, conns: int, lua: Path,
         duration: int | None = None) -> dict[str, float]:
    duration = duration or args.duration
    if not use_py(args):
        return bench.wrk(url, host, conns, duration, lua)
    return bench.pyload(url, host or url.split("//", 1)[1], conns, duration)


def backend(args: argparse.Namespace, work: Path, port: int) -> subprocess.Popen[bytes]:
    if not use_py(args):
        return bench.nginx(work, port, 1 << 20)
    proc = subprocess.Popen([sys.executable, str(PYLOAD), "serve", str(port)])
    bench.wait_port(port)
    return proc


def one_round(tree: Path, python: str, args: argparse.Namespace, work: Path, lua: Path,
              backend_port: int) -> dict[str, float]:
    relay_port = bench.free_port()
    env = dict(os.environ, XDG_STATE_HOME=str(work / f"state-{relay_port}"), PYTHONPATH=str(tree))
    pin = 1 if args.pin else None
    relay = subprocess.Popen(
        pinned(pin, [python, "-m", "devtunnel", "relay", "--listen", f"127.0.0.1:{relay_port}", "--domain", "localhost",
                     "--token", "bench"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, cwd=work)
    procs: list[subprocess.Popen[bytes]] = [relay]
    try:
        bench.wait_port(relay_port)
        out = work / f"agent-{relay_port}.out"
        with open(out, "wb") as f:
            agent = subprocess.Popen(
                pinned(pin, [python, "-m", "devtunnel", "http", f"127.0.0.1:{backend_port}", "--relay",
                             f"ws://127.0.0.1:{relay_port}", "--token", "bench", "--name", "bench", "--no-tui",
                             "--api-port", "0", *(["--no-record"] if args.no_record else [])]),
                stdout=f, stderr=subprocess.STDOUT, env=env, cwd=work)
        procs.append(agent)
        bench.wait_forwarding(agent, out)
        url, host = f"http://127.0.0.1:{relay_port}", f"bench.localhost:{relay_port}"
        load(args, url, host, 1, lua, 1)  # warm-up
        before = cpu_seconds(relay.pid), cpu_seconds(agent.pid), side_threads_cpu_seconds(agent.pid)
        result = load(args, url, host, args.conns, lua)
        after = cpu_seconds(relay.pid), cpu_seconds(agent.pid), side_threads_cpu_seconds(agent.pid)
        requests = result.get("requests") or result["rps"] * args.duration
        return {
            "p50_ms": result["p50_ms"],
            "rps": result["rps"],
            "relay_us": (after[0] - before[0]) / requests * 1e6,
            "agent_us": (after[1] - before[1]) / requests * 1e6,
            "recorder_us": (after[2] - before[2]) / requests * 1e6,
            "total_us": (after[0] + after[1] - before[0] - before[1]) / requests * 1e6,
        }
    finally:
        bench.stop_all(procs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", type=Path, help="directories holding a devtunnel package")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=int, default=3, help="seconds of wrk per tree and round")
    ap.add_argument("--conns", type=int, default=1, help="wrk connections (default 1)")
    ap.add_argument("--load", choices=("auto", "py"), default="auto",
                    help="py: bench/pyload.py's backend and client even where nginx and wrk exist")
    ap.add_argument("--python", action="append",
                    help="the interpreter that runs relay and agent, once per tree in order (default: this one)")
    ap.add_argument("--no-record", action="store_true", help="run the agents with recording off")
    ap.add_argument("--pin", action="store_true", help="relay and agent on CPU 1, wrk and nginx on CPU 0")
    args = ap.parse_args()
    args.trees = [tree.resolve() for tree in args.trees]  # the processes run from a scratch directory
    pythons = args.python or [sys.executable] * len(args.trees)
    if len(pythons) != len(args.trees):
        raise SystemExit("give --python once per tree, or not at all")
    runs = [(f"{tree}" + (f" ({py})" if args.python else ""), tree, py) for tree, py in zip(args.trees, pythons)]
    for tree in args.trees:
        if not (tree / "devtunnel" / "__main__.py").is_file():
            raise SystemExit(f"{tree} holds no devtunnel package")
    for tool in ("taskset",) if args.pin else ():
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing")
    if args.pin:
        os.sched_setaffinity(0, {0})  # this process, so nginx and wrk, on CPU 0

    work = Path(tempfile.mkdtemp(prefix="devtunnel-ab-"))
    work.chmod(0o755)
    lua = work / "report.lua"
    lua.write_text(bench.WRK_LUA)
    backend_port = bench.free_port()
    nginx = backend(args, work, backend_port)
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in runs}
    direct: list[dict[str, float]] = []
    try:
        for n in range(args.rounds):
            d = load(args, f"http://127.0.0.1:{backend_port}", None, args.conns, lua)
            direct.append(d)
            print(f"round {n + 1}: direct p50 {d['p50_ms']:.3f} ms, {d['rps']:,.0f} req/s")
            for label, tree, py in runs:
                row = one_round(tree, py, args, work, lua, backend_port)
                results[label].append(row)
                print(f"  {label}: p50 {row['p50_ms']:.3f} ms, {row['rps']:,.0f} req/s, "
                      f"relay {row['relay_us']:.0f} us/req, agent {row['agent_us']:.0f} us/req "
                      f"(recorder thread {row['recorder_us']:.0f}), together {row['total_us']:.0f}", flush=True)
    finally:
        bench.stop_all([nginx])
        shutil.rmtree(work, ignore_errors=True)

    direct_p50 = statistics.median(d["p50_ms"] for d in direct)
    print(f"\nmedians over {args.rounds} rounds, {args.conns} connection(s){', pinned' if args.pin else ''}:")
    print("| tree | p50 ms | p50 / direct | req/s | relay us/req | agent us/req | of which recorder thread "
          "| relay + agent us/req |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    direct_name = "direct (pyload.py)" if use_py(args) else "direct (nginx)"
    print(f"| {direct_name} | {direct_p50:.3f} | 1.00 | {statistics.median(d['rps'] for d in direct):,.0f} | | | | |")
    for label, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"| {label} | {med['p50_ms']:.3f} | {med['p50_ms'] / direct_p50:.2f} | {med['rps']:,.0f} | "
              f"{med['relay_us']:.0f} | {med['agent_us']:.0f} | {med['recorder_us']:.0f} | {med['total_us']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
