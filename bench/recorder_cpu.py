"""CPU per recorded exchange: ``Recorder.submit`` and the recorder's thread writing to SQLite.

Usage:
    .venv/bin/python bench/recorder_cpu.py [TREE ...] [--n 20000] [--batch 100] [--rounds 3]
                                          [--full 20000] [--callgrind | --syscalls]

Each TREE is a devtunnel source tree (a ``git archive`` copy of another commit, or this one,
the default); the first is the base the others are compared with. Every measurement runs in a
child process with ``PYTHONPATH=TREE``, the trees in turn, round by round.

The exchanges are what a GET through the tunnel records: a dozen request headers, six response
headers, a 1 KiB response body, no request body, ids from ``capture.model.new_id``. They go
through a real ``Recorder`` (with the agent's webhook context, so each is judged) into a real
SQLite file in a temporary folder, ``--batch`` at a time (``submit`` each, then ``flush``: the
batches the writer makes under load). The store holds ``--full`` exchanges before the
measurement and keeps at most that many, so every batch also deletes as many old ones
(retention, as in an agent that has been up a while); ``--full 0`` writes into an empty store
without a limit.

It prints the CPU time (``time.thread_time`` in the main thread, the writer thread's CPU clock)
per exchange: the writer's thread (judge, rows, SQLite, commit) and the submitting thread
(``submit``, ``flush``). With ``--callgrind`` it runs each child under ``valgrind
--tool=callgrind --separate-threads=yes`` instead, once with the measured batches and once
without, and prints the difference in instructions per exchange of each thread: figures that
another process's load does not move. It also counts, per exchange, the writer's GIL releases
(calls to ``PyEval_SaveThread`` in its thread: sqlite3 lets go of the GIL around each step, reset
and some calls of every statement, and in the agent each one is a chance for the busy event
loop to take the GIL, and a futex handoff to win it back). With ``--syscalls`` it runs each
child under ``strace -f -c`` instead, with and without the measured batches, and prints the
system calls per exchange by name (WAL and checkpoint writes and reads, temporary files):
the file work is as deterministic as the pages written; futex and the like depend on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import tunnel as bench  # noqa: E402  (bench/tunnel.py: callgrind_total)

# --- the child: runs with PYTHONPATH=TREE ----------------------------------------------------------

_REQUEST_HEADERS = (
    (b"Host", b"shop.tunnel.example"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"),
    (b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
    (b"Accept-Encoding", b"gzip, deflate, br"),
    (b"Accept-Language", b"en-US,en;q=0.9"),
    (b"Cache-Control", b"no-cache"),
    (b"Cookie", b"session=4f2a9c1e8b7d6a5f3e2d1c0b9a8f7e6d; theme=dark"),
    (b"Referer", b"https://shop.tunnel.example/products"),
    (b"Sec-Fetch-Mode", b"navigate"),
    (b"X-Forwarded-For", b"203.0.113.7"),
    (b"X-Forwarded-Proto", b"https"),
    (b"X-Request-Id", b"9b1de6a0-52c4-4a8e-9f1f-3c2b0e7d4a61"),
)
_RESPONSE_HEADERS = (
    (b"Server", b"nginx/1.22.1"),
    (b"Date", b"Wed, 02 Dec 2026 12:00:00 GMT"),
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"1024"),
    (b"Connection", b"keep-alive"),
    (b"ETag", b'"6569a1b0-400"'),
)


def _exchanges(count: int) -> list[object]:
    from devtunnel.capture.model import Exchange, Headers, Request, Response, new_id

    out: list[object] = []
    body = (b'{"items": [' + b'{"id": 1, "name": "widget"}, ' * 36)[:1022] + b"]}"
    for n in range(count):
        now = time.time()
        out.append(Exchange(
            id=new_id(now),
            tunnel="shop",
            started_at=now,
            request=Request(headers=Headers.of_pairs(_REQUEST_HEADERS), method="GET",
                            target=f"/api/v1/items/{n % 997}?page={n % 7}".encode()),
            response=Response(headers=Headers.of_pairs(_RESPONSE_HEADERS), status=200, reason="OK",
                              body=body, body_size=len(body)),
            remote_addr="203.0.113.7",
            scheme="https",
            target_url="http://127.0.0.1:8080",
            ttfb=0.0004,
            duration=0.0006,
        ))
    return out


def _webhooks() -> object:
    from devtunnel.webhooks.context import WebhookContext

    return WebhookContext()


def child_fill(path: str, count: int, batch: int) -> None:
    """Fill a store with ``count`` exchanges (the template each measurement copies)."""
    from devtunnel.capture.store import Store

    store = Store(path, max_exchanges=max(count, 1))
    exchanges = _exchanges(count)
    for start in range(0, count, batch):
        store.put_many(exchanges[start:start + batch])  # type: ignore[arg-type]
    store.close()


def child_measure(path: str, n: int, batch: int, full: int, write: bool) -> dict[str, float]:
    """Submit and flush ``n`` exchanges ``batch`` at a time (only the warm-up when not ``write``)."""
    from devtunnel.capture.recorder import Recorder
    from devtunnel.capture.store import Store

    store = Store(path, max_exchanges=full if full else 10**9)
    recorder = Recorder(store, webhooks=_webhooks())  # type: ignore[arg-type]
    warm = _exchanges(4 * batch)
    exchanges = _exchanges(n)
    for start in range(0, len(warm), batch):
        for ex in warm[start:start + batch]:
            recorder.submit(ex)  # type: ignore[arg-type]
        recorder.flush(60)
    ident = recorder._thread.ident
    assert ident is not None
    clock = time.pthread_getcpuclockid(ident)
    main0, writer0 = time.thread_time(), time.clock_gettime(clock)
    if write:
        submit = recorder.submit
        for start in range(0, n, batch):
            for ex in exchanges[start:start + batch]:
                submit(ex)  # type: ignore[arg-type]
            recorder.flush(60)
    main1, writer1 = time.thread_time(), time.clock_gettime(clock)
    recorder.close()
    kept = Store(path, readonly=True).count()
    return {"main_us": (main1 - main0) / n * 1e6, "writer_us": (writer1 - writer0) / n * 1e6, "count": kept}


# --- the parent -----------------------------------------------------------------------------------


def _run_child(tree: Path, argv: list[str], *, callgrind_out: Path | None = None,
               strace_out: Path | None = None) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *argv]
    if callgrind_out is not None:
        cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
               f"--callgrind-out-file={callgrind_out}", *cmd]
    if strace_out is not None:
        cmd = ["strace", "-f", "-c", "-o", str(strace_out), *cmd]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed ({tree}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _thread_irs(prefix: Path) -> list[int]:
    """Instructions of each thread from callgrind's per-thread files (``PREFIX-01``, ``-02``, ...)."""
    irs: list[tuple[int, int]] = []
    for file in prefix.parent.glob(prefix.name + "-*"):
        total = bench.callgrind_total(file)
        if total is not None:
            irs.append((int(file.name.rsplit("-", 1)[1]), total))
    return [ir for _, ir in sorted(irs)]


def _thread_calls(prefix: Path, function: str) -> int:
    """Calls to ``function`` (an exact name) from every thread but the first, from callgrind's files."""
    total = 0
    for file in prefix.parent.glob(prefix.name + "-*"):
        if file.name.endswith("-01"):
            continue
        names: dict[str, str] = {}
        target = None
        with file.open(errors="replace") as lines:
            for line in lines:
                if line.startswith(("fn=", "cfn=")):
                    found = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                    if found is None:
                        continue
                    if found.group(2):
                        names[found.group(1)] = found.group(2).split(" [")[0]
                    target = names.get(found.group(1)) if line.startswith("cfn=") else None
                elif line.startswith("calls=") and target is not None:
                    if target.rsplit(":", 1)[-1] == function:
                        total += int(line[6:].split()[0])
                    target = None
    return total


def _syscalls(path: Path) -> dict[str, int]:
    """System calls by name from ``strace -c`` output."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        cols = line.split()
        if len(cols) >= 5 and cols[0][0].isdigit() and cols[-1] != "total":
            counts[cols[-1]] = int(cols[3])
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="*", type=Path, help="source trees (default: this one); the first is the base")
    ap.add_argument("--n", type=int, default=20_000, help="exchanges measured (default %(default)s; 2000 with --callgrind)")
    ap.add_argument("--batch", type=int, default=100, help="exchanges per batch (default %(default)s)")
    ap.add_argument("--full", type=int, default=20_000,
                    help="exchanges in the store beforehand, and its limit (default %(default)s; 0: empty, no limit)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of thread CPU timing (default %(default)s)")
    ap.add_argument("--callgrind", action="store_true", help="count instructions under callgrind instead")
    ap.add_argument("--syscalls", action="store_true", help="count system calls under strace instead")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        what, path, *rest = args.child
        if what == "fill":
            child_fill(path, int(rest[0]), int(rest[1]))
            print("{}")
        else:
            n, batch, full, write = (int(x) for x in rest)
            print(json.dumps(child_measure(path, n, batch, full, bool(write))))
        return 0

    trees = [t.resolve() for t in args.trees] or [ROOT]
    n = args.n if args.n != 20_000 or not (args.callgrind or args.syscalls) else 2000
    with tempfile.TemporaryDirectory(prefix="devtunnel-rec-bench-") as folder:
        work = Path(folder)
        templates: list[Path] = []
        for i, tree in enumerate(trees):
            template = work / f"template-{i}.db"
            if args.full:
                _run_child(tree, ["fill", str(template), str(args.full), str(args.batch)])
            templates.append(template)

        def fresh(i: int) -> str:
            db = work / "run" / "captures.db"
            if db.parent.exists():
                shutil.rmtree(db.parent)
            db.parent.mkdir()
            if args.full:
                shutil.copyfile(templates[i], db)
            return str(db)

        print(f"{n:,} GET exchanges in batches of {args.batch}, "
              + (f"store at its limit of {args.full:,}" if args.full else "empty store, no limit"))
        if args.callgrind:
            results = []
            for i, tree in enumerate(trees):
                per_thread: list[list[int]] = []
                releases: list[int] = []
                for write in (1, 0):
                    out = work / f"cg-{i}-{write}"
                    _run_child(tree, ["measure", fresh(i), str(n), str(args.batch), str(args.full), str(write)],
                               callgrind_out=out)
                    per_thread.append(_thread_irs(out))
                    releases.append(_thread_calls(out, "PyEval_SaveThread"))
                main_ir = (per_thread[0][0] - per_thread[1][0]) / n
                writer_ir = (sum(per_thread[0][1:]) - sum(per_thread[1][1:])) / n
                results.append((main_ir, writer_ir))
                print(f"{str(tree):40} writer thread {writer_ir:10,.0f} Ir/exchange   "
                      f"submitting thread {main_ir:8,.0f} Ir/exchange   "
                      f"writer GIL releases {(releases[0] - releases[1]) / n * args.batch:6.1f}/batch")
            for (tree, (m, w)) in list(zip(trees, results))[1:]:
                print(f"{str(tree):40} / base: writer {w / results[0][1]:.3f}, submitting {m / results[0][0]:.3f}, "
                      f"both {(m + w) / sum(results[0]):.3f}")
            return 0

        if args.syscalls:
            for i, tree in enumerate(trees):
                counted: list[dict[str, int]] = []
                for write in (1, 0):
                    out = work / f"strace-{i}-{write}"
                    _run_child(tree, ["measure", fresh(i), str(n), str(args.batch), str(args.full), str(write)],
                               strace_out=out)
                    counted.append(_syscalls(out))
                per = {name: (k - counted[1].get(name, 0)) / n for name, k in counted[0].items()}
                shown = "  ".join(f"{name} {k:.2f}" for name, k in sorted(per.items(), key=lambda kv: -kv[1])
                                  if abs(k) >= 0.005)
                print(f"{str(tree):40} per exchange: {shown}")
            return 0

        samples: list[list[dict[str, float]]] = [[] for _ in trees]
        for r in range(args.rounds):
            for i, tree in enumerate(trees):
                res = _run_child(tree, ["measure", fresh(i), str(n), str(args.batch), str(args.full), "1"])
                samples[i].append(res)
                print(f"round {r + 1} {str(tree):40} writer {res['writer_us']:6.1f} us/exchange  "
                      f"submitting {res['main_us']:5.2f} us/exchange  (stored {int(res['count']):,})")
        medians = [(statistics.median(s["writer_us"] for s in ss), statistics.median(s["main_us"] for s in ss))
                   for ss in samples]
        for tree, (w, m) in zip(trees, medians):
            print(f"median {str(tree):40} writer {w:6.1f} us/exchange  submitting {m:5.2f} us/exchange")
        for tree, (w, m) in list(zip(trees, medians))[1:]:
            print(f"{str(tree):40} / base: writer {w / medians[0][0]:.3f}, submitting {m / medians[0][1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
