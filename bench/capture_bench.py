"""Capture store benchmark: recorder insert rate, filtering 100k stored exchanges, size per 100k.

    .venv/bin/python bench/capture_bench.py [--n 100000] [--budget 300]

Builds a store of realistic exchanges in a temporary folder (removed afterwards) and prints:

- insert rate through the Recorder, against plain ``executemany`` of the same bytes into one
  table (the floor SQLite itself sets);
- ``ids(filter)`` and ``count(filter)`` times for a few three-term expressions, against
  ``SELECT count(*)`` over the table (a full scan that evaluates nothing) and against the same
  filter run in Python on exchanges already in memory;
- database size and peak RSS, scaled to 100k exchanges.

Bounded: generation stops when ``--budget`` seconds are used up, whatever ``--n`` says.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from devtunnel.capture.filters import parse
from devtunnel.capture.model import Exchange, Headers, Request, Response, new_id
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.rows import encode_headers
from devtunnel.capture.store import Store

EXPRESSIONS = [
    "method:POST path:/webhooks status:>=400",
    "~m POST & ~u /hooks & !~c 200",
    "host:api status:5xx dur:>500ms",
    "tunnel:shop -status:2xx size:>1kb",
    "header:stripe-signature body:invoice.paid status:4xx",
]

PATHS = ["/webhooks/stripe", "/webhooks/github", "/api/v1/items/{n}", "/api/v1/orders/{n}", "/health",
         "/static/app.{n}.js", "/login", "/graphql"]
HOSTS = ["shop.tunnel.example", "api.tunnel.example", "hooks.localhost:8080"]
STATUSES = [200] * 30 + [201, 204, 301, 304, 400, 401, 403, 404, 404, 409, 422, 500, 502, 503]


def make_exchange(rng: random.Random, n: int) -> Exchange:
    path = rng.choice(PATHS).format(n=n % 997)
    method = "POST" if path.startswith("/webhooks") or rng.random() < 0.2 else "GET"
    host = rng.choice(HOSTS)
    headers = [("Host", host), ("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)"),
               ("Accept", "*/*; q=0.5, application/xml"), ("Accept-Encoding", "gzip"),
               ("X-Forwarded-For", f"203.0.113.{n % 250}"), ("X-Request-Id", new_id())]
    body = b""
    if method == "POST":
        event = {"id": f"evt_{n}", "object": "event", "created": 1_700_000_000 + n,
                 "type": rng.choice(["invoice.paid", "customer.created", "charge.failed"]),
                 "data": {"object": {"id": f"in_{n}", "amount_paid": rng.randrange(100, 100_000),
                                     "currency": "usd", "lines": [{"id": f"il_{n}_{i}"} for i in range(3)]}}}
        body = json.dumps(event).encode()
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if path == "/webhooks/stripe":
            headers.append(("Stripe-Signature", f"t={n},v1={rng.getrandbits(128):032x}"))
    status = rng.choice(STATUSES)
    res_body = json.dumps({"ok": status < 400, "n": n, "pad": "x" * rng.randrange(0, 2500)}).encode()
    return Exchange(
        id=new_id(),
        tunnel=rng.choice(["shop", "api"]),
        started_at=time.time(),
        request=Request(method=method, target=f"{path}?attempt={n % 3}".encode(), headers=Headers(headers),
                        body=body, body_size=len(body)),
        response=Response(status=status, headers=Headers([("Content-Type", "application/json"),
                                                          ("Content-Length", str(len(res_body))),
                                                          ("Date", "Thu, 26 Nov 2026 12:00:00 GMT")]),
                          body=res_body, body_size=len(res_body)),
        remote_addr=f"203.0.113.{n % 250}:5{n % 1000:03d}",
        target_url="http://127.0.0.1:8080",
        ttfb=rng.random() * 0.5,
        duration=rng.expovariate(1 / 0.2),
    )


def timed(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Median wall time of ``fn()`` in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="exchanges to store (default: %(default)s)")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds allowed for generation and insert")
    args = ap.parse_args()
    rng = random.Random(7)
    deadline = time.monotonic() + args.budget

    with tempfile.TemporaryDirectory(prefix="devtunnel-bench-") as folder:
        db = Path(folder) / "captures.db"
        store = Store(db, max_exchanges=max(args.n, 1))
        recorder = Recorder(store)
        sample: list[Exchange] = []  # every 10th exchange, for the in-memory Python baseline
        baseline_rows: list[tuple[object, ...]] = []
        submit_time = write_time = 0.0
        made = 0
        chunk = 10_000
        while made < args.n:
            if time.monotonic() > deadline:
                print(f"budget reached: stopped at {made} exchanges", file=sys.stderr)
                break
            # Generate a chunk first, so the timing below is the recorder's alone.
            batch = [make_exchange(rng, n) for n in range(made, min(made + chunk, args.n))]
            t = time.perf_counter()
            for ex in batch:
                recorder.submit(ex)
            submitted = time.perf_counter()
            recorder.flush(timeout=600)
            submit_time += submitted - t
            write_time += time.perf_counter() - t
            for ex in batch[::10]:
                sample.append(ex)
                baseline_rows.append((ex.id, ex.request.method, ex.request.url_text, ex.status,
                                      encode_headers(ex.request.headers), ex.request.body, ex.response.body))  # type: ignore[union-attr]
            made += len(batch)
        recorder.close()
        # The baseline insert: the same kind of rows into one plain table, one executemany.
        base_db = sqlite3.connect(Path(folder) / "baseline.db")
        base_db.execute("PRAGMA journal_mode=WAL")
        base_db.execute("PRAGMA synchronous=NORMAL")
        base_db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, m, u, s, h, b1, b2)")
        t = time.perf_counter()
        with base_db:
            base_db.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)", baseline_rows)
        base_rate = len(baseline_rows) / (time.perf_counter() - t)
        base_db.close()

        stored = store.count()
        rate = made / write_time
        print(f"exchanges stored: {stored:,}")
        print(f"recorder:   {rate:,.0f} exchanges/s from submit() to committed; "
              f"submit() {submit_time / made * 1e6:.1f} us each")
        print(f"baseline:   {base_rate:,.0f} rows/s plain executemany of the same rows into one table "
              f"(recorder/baseline = {rate / base_rate:.2f})")

        conn = sqlite3.connect(db)
        scan = timed(lambda: conn.execute("SELECT count(*) FROM exchanges WHERE status > -1").fetchone())
        conn.close()
        print(f"full scan:  {scan * 1000:.1f} ms  SELECT count(*) ... WHERE status > -1 (the floor)")
        print()
        print(f"{'expression':55} {'matches':>8} {'ids ms':>8} {'count ms':>9} {'x scan':>7} {'python ms/100k':>15}")
        for expression in EXPRESSIONS:
            flt = parse(expression)
            matches = len(store.ids(flt))
            ids_time = timed(lambda f=flt: store.ids(f))
            count_time = timed(lambda f=flt: store.count(f))
            py_time = timed(lambda f=flt: [ex for ex in sample if f(ex)]) * (stored / max(len(sample), 1))
            print(f"{expression:55} {matches:8,} {ids_time * 1000:8.1f} {count_time * 1000:9.1f} "
                  f"{ids_time / scan:7.1f} {py_time * 1000:15.1f}")
        print()
        size = sum(p.stat().st_size for p in Path(folder).glob("captures.db*"))
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        scale = 100_000 / max(stored, 1)
        print(f"database:   {size / 2**20:.1f} MiB on disk ({size * scale / 2**20:.1f} MiB per 100k exchanges; "
              f"{store.total_bytes() / max(stored, 1):,.0f} bytes counted per exchange)")
        print(f"peak RSS:   {rss_mb:.0f} MiB for this process (holds a {len(sample):,}-exchange sample in memory)")
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
