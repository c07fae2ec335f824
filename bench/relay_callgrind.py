"""The relay's instructions per request under callgrind: a figure the machine's load does not move.

    .venv/bin/python bench/relay_callgrind.py TREE [TREE ...] [--requests 2000] [--conns 50] [--rounds 1]

For each tree (a directory holding a ``devtunnel`` package, e.g. ``git archive REV | tar -x -C
/tmp/rev``) it starts ``bench/pyload.py serve`` as the backend, ``devtunnel relay`` under
``valgrind --tool=callgrind`` and ``devtunnel http ... --no-tui`` (not under valgrind), warms the
tunnel up with 200 requests, then zeroes the relay's counters (``callgrind_control -z``), sends
exactly ``--requests`` requests over ``--conns`` keep-alive connections (``pyload.py load ...
REQUESTS``), dumps the counters, lets the relay sit idle for as long as the load took and dumps
again. (loaded - idle) / requests is what one request costs the relay in instructions. Trees
run in turns, ``--rounds`` times. Under valgrind the relay serves a few hundred requests a
second, so the agent's batching differs from a real run; it is a count, not a time.

Loopback only; every process is stopped by its PID, and each load is bounded in time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tunnel as bench  # noqa: E402  (bench/tunnel.py: free_port, wait_port, wait_forwarding, stop_all)

PYLOAD = Path(__file__).resolve().parent / "pyload.py"
LOAD_SECONDS = 300  # the bound of one load; a request-count load under valgrind ends well before


def _load(relay_port: int, conns: int, requests: int) -> int:
    url, host = f"http://127.0.0.1:{relay_port}", f"bench.localhost:{relay_port}"
    result = bench.pyload(url, host, conns, LOAD_SECONDS, requests)
    if result["errors"]:
        raise SystemExit(f"pyload saw {result['errors']} failed responses")
    return int(result["requests"])


def _dump(pid: int, out_dir: Path) -> int:
    """Dump the relay's counters (which zeroes them) and return the instructions in that dump."""
    before = set(out_dir.glob("callgrind.out.*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True, timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = sorted(set(out_dir.glob("callgrind.out.*")) - before)
        for path in new:
            total = bench.callgrind_total(path)
            if total is not None:
                return total
        time.sleep(0.2)
    raise SystemExit("callgrind wrote no dump within 60 s")


def _run(tree: Path, requests: int, conns: int, work: Path) -> tuple[int, int, int]:
    """Requests served, and the relay's instructions loaded and idle over as long."""
    backend_port = bench.free_port()
    procs: list[subprocess.Popen[bytes]] = [subprocess.Popen([sys.executable, str(PYLOAD), "serve", str(backend_port)])]
    try:
        bench.wait_port(backend_port)
        out_dir = work / f"cg-{backend_port}"
        out_dir.mkdir()
        relay_port, relay, _ = bench.start_tunnel(
            tree, work, backend_port, procs, timeout=120,
            relay_python=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/callgrind.out.%p",
                          sys.executable])
        _load(relay_port, conns, 200)  # warm-up: first-time paths, caches
        subprocess.run(["callgrind_control", "-z", str(relay.pid)], check=True, capture_output=True, timeout=120)
        started = time.monotonic()
        served = _load(relay_port, conns, requests)
        took = time.monotonic() - started
        loaded = _dump(relay.pid, out_dir)
        time.sleep(took)  # the idle run: as long as the load took, nothing asked
        idle = _dump(relay.pid, out_dir)
        return served, loaded, idle
    finally:
        bench.stop_all(procs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", type=Path, help="directories holding a devtunnel package")
    ap.add_argument("--requests", type=int, default=2000, help="requests measured (default %(default)s)")
    ap.add_argument("--conns", type=int, default=50, help="keep-alive connections (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each tree, in turns (default %(default)s)")
    ap.add_argument("--keep", type=Path, help="keep the callgrind dumps here (for callgrind_annotate)")
    args = ap.parse_args()
    print("| tree | requests | loaded Ir | idle Ir | relay instructions/req |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        for _ in range(args.rounds):
            for tree in args.trees:
                served, loaded, idle = _run(tree.resolve(), args.requests, args.conns, work)
                if not served:
                    raise SystemExit(f"{tree}: no request was served")
                print(f"| {tree} | {served:,} | {loaded:,} | {idle:,} | {(loaded - idle) / served:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
