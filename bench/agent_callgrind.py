"""Instructions per request in the agent's event-loop thread, under callgrind: a figure load does not move.

    .venv/bin/python bench/agent_callgrind.py TREE [TREE ...] [--requests 2000] [--conns 50] [--runs 1] [--keep DIR]

For each tree (a directory holding a ``devtunnel`` package, e.g. ``git archive REV | tar -x -C
/tmp/rev``) it starts ``bench/pyload.py serve`` as the local service, ``devtunnel relay`` and
``devtunnel http ... --no-tui`` with ``PYTHONPATH=TREE``, the agent under ``valgrind
--tool=callgrind --separate-threads=yes``, twice: once with exactly ``--requests`` GETs from
``bench/pyload.py load`` over ``--conns`` keep-alive connections (bounded by ``--timeout``
seconds), then once idle for as long as that load lasted (timers cost by the second). The
difference of the two runs' instruction counts, per thread, divided by the requests, is what one
request costs: the event loop (the main thread, callgrind's ``-01`` file) and the other threads
together (the recorder's SQLite writer). Start and stop are left out by the subtraction.
``PYTHONHASHSEED`` is fixed; what still moves the figure is how requests batch, which follows
the machine's load (a few percent between runs of one tree: see docs/performance.md).

Loopback only; every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tunnel as bench  # noqa: E402  (bench/tunnel.py: free_port, wait_port, wait_forwarding, stop_all)

PYLOAD = Path(__file__).resolve().parent / "pyload.py"


def _thread_irs(prefix: Path) -> dict[int, int]:
    """Instructions of each thread, by callgrind's thread number (1 is the main thread)."""
    irs: dict[int, int] = {}
    for file in prefix.parent.glob(prefix.name + "-*"):
        total = bench.callgrind_total(file)
        if total is not None:
            irs[int(file.name.rsplit("-", 1)[1])] = total
    return irs


def _run(tree: Path, requests: int, conns: int, timeout: float, work: Path, tag: str,
         hold: float = 0.0) -> tuple[int, float, dict[int, int]]:
    """Requests answered, seconds from the tunnel up to the stop, and the agent's instructions
    per thread, for one run; without requests the agent sits idle for ``hold`` seconds."""
    backend_port = bench.free_port()
    prefix = work / f"cg-{tag}"
    procs: list[subprocess.Popen[bytes]] = [subprocess.Popen([sys.executable, str(PYLOAD), "serve", str(backend_port)])]
    try:
        bench.wait_port(backend_port)
        relay_port, _, agent = bench.start_tunnel(
            tree, work, backend_port, procs, env={"PYTHONHASHSEED": "0"}, timeout=180,
            agent_python=["valgrind", "--tool=callgrind", "--separate-threads=yes",
                          f"--callgrind-out-file={prefix}", sys.executable])
        up = time.monotonic()
        served = 0
        if requests:
            url, host = f"http://127.0.0.1:{relay_port}", f"bench.localhost:{relay_port}"
            result = bench.pyload(url, host, conns, timeout, requests)
            served = int(result["requests"])
            if result["errors"] or served != requests:
                raise SystemExit(f"{tree}: {served} of {requests} answered, {result['errors']} errors "
                                 f"(raise --timeout?)")
        else:
            time.sleep(hold)  # idle as long as the loaded run lasted: its timers cost the same
        held = time.monotonic() - up
        agent.send_signal(signal.SIGINT)  # devtunnel stops cleanly, and callgrind writes its files
        agent.wait(timeout=120)
        return served, held, _thread_irs(prefix)
    finally:
        bench.stop_all(procs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", type=Path, help="directories holding a devtunnel package")
    ap.add_argument("--requests", type=int, default=2000, help="requests in the loaded run (default %(default)s)")
    ap.add_argument("--conns", type=int, default=50, help="keep-alive connections (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds the load may take at most (default %(default)s)")
    ap.add_argument("--runs", type=int, default=1, help="loaded runs per tree, in turns (default %(default)s)")
    ap.add_argument("--keep", type=Path, help="keep the callgrind dumps here (for callgrind_annotate)")
    args = ap.parse_args()
    print(f"{args.requests:,} GETs of 1 KiB over {args.conns} connections; agent instructions per request")
    print("| tree | run | event loop Ir/req | other threads Ir/req |")
    print("|---|---:|---:|---:|")
    trees = [t.resolve() for t in args.trees]
    for tree in trees:  # compiled beforehand: a run that compiles would count the compiler
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "devtunnel")], check=True)
    with tempfile.TemporaryDirectory(prefix="devtunnel-agent-cg-") as scratch:
        work = Path(scratch)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep.resolve()
        loops: dict[Path, list[float]] = {tree: [] for tree in trees}
        for run in range(args.runs):
            for i, tree in enumerate(trees):
                started = time.monotonic()
                served, held, busy = _run(tree, args.requests, args.conns, args.timeout, work, f"load-{i}-{run}")
                _, _, idle = _run(tree, 0, args.conns, args.timeout, work, f"idle-{i}-{run}", hold=held)
                loop = (busy.get(1, 0) - idle.get(1, 0)) / served
                others = (sum(v for k, v in busy.items() if k != 1) - sum(v for k, v in idle.items() if k != 1)) / served
                loops[tree].append(loop)
                print(f"| {tree} | {run + 1} | {loop:,.0f} | {others:,.0f} |  (load {held:.0f} s, "
                      f"{time.monotonic() - started:.0f} s in all)", flush=True)
        base = sum(loops[trees[0]]) / len(loops[trees[0]])
        for tree in trees[1:]:
            mean = sum(loops[tree]) / len(loops[tree])
            print(f"{tree}: event loop {mean:,.0f} against {base:,.0f} Ir/req ({(mean / base - 1) * 100:+.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
