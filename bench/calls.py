"""Python function calls per request in relay and agent: a figure the machine's load does not move.

    .venv/bin/python bench/calls.py TREE [TREE ...] [--seconds 4] [--conns 10]

For each tree (a directory holding a ``devtunnel`` package, e.g. ``git archive REV | tar -x -C
/tmp/rev``) it runs ``devtunnel relay`` and ``devtunnel http ... --no-tui`` under ``python -m
cProfile``, twice: once with no load and once loaded for ``--seconds`` by ``bench/pyload.py`` (a
keep-alive client with ``--conns`` connections against its own backend). The difference of the
two runs' call counts, divided by the requests served, is what one request costs in calls, start
and stop left out. cProfile sees the event-loop thread only: the agent's recorder thread is not
counted. Time per call is not measured here (cProfile slows every call); ``bench/cpu_ab.py``
measures CPU.

Loopback only; every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import pstats
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tunnel as bench  # noqa: E402  (bench/tunnel.py: free_port, wait_port, wait_forwarding)

PYLOAD = Path(__file__).resolve().parent / "pyload.py"


def _run(tree: Path, seconds: int, conns: int, work: Path) -> tuple[float, int, int]:
    """Requests served, and the relay's and the agent's total calls, for one run."""
    backend_port = bench.free_port()
    procs: list[subprocess.Popen[bytes]] = [subprocess.Popen([sys.executable, str(PYLOAD), "serve", str(backend_port)])]
    try:
        bench.wait_port(backend_port)
        relay_prof, agent_prof = work / f"relay-{backend_port}.prof", work / f"agent-{backend_port}.prof"
        relay_port, relay, agent = bench.start_tunnel(
            tree, work, backend_port, procs, relay_python=[sys.executable, "-m", "cProfile", "-o", str(relay_prof)],
            agent_python=[sys.executable, "-m", "cProfile", "-o", str(agent_prof)])
        requests = 0.0
        if seconds:
            url, host = f"http://127.0.0.1:{relay_port}", f"bench.localhost:{relay_port}"
            result = bench.pyload(url, host, conns, seconds)
            requests = float(result.get("requests") or result["rps"] * seconds)
        for proc in (agent, relay):  # SIGINT: devtunnel stops cleanly, and cProfile writes its file
            proc.send_signal(signal.SIGINT)
        for proc in (agent, relay):
            proc.wait(timeout=30)
        return requests, pstats.Stats(str(relay_prof)).total_calls, pstats.Stats(str(agent_prof)).total_calls
    finally:
        bench.stop_all(procs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", type=Path, help="directories holding a devtunnel package")
    ap.add_argument("--seconds", type=int, default=4, help="seconds of load (default %(default)s)")
    ap.add_argument("--conns", type=int, default=10, help="keep-alive connections (default %(default)s)")
    args = ap.parse_args()
    print("| tree | requests | relay calls/req | agent calls/req |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for tree in args.trees:
            _, relay_idle, agent_idle = _run(tree.resolve(), 0, args.conns, work)
            requests, relay_busy, agent_busy = _run(tree.resolve(), args.seconds, args.conns, work)
            if not requests:
                raise SystemExit(f"{tree}: no request was served")
            print(f"| {tree} | {requests:,.0f} | {(relay_busy - relay_idle) / requests:.1f} "
                  f"| {(agent_busy - agent_idle) / requests:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
