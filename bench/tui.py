"""How the inspector copes with a big store and heavy live traffic (headless, ``App.run_test``).

    .venv/bin/python bench/tui.py [--rows 100000] [--rate 1000] [--seconds 10] [--db PATH]

1. Builds a store of ``--rows`` exchanges in a temp dir (``bench/store_fill.py``: a thousand
   recorded, the rest copied in one transaction), or uses ``--db``.
2. Opens the inspector on it: time to first paint (the newest rows on screen) and RSS.
3. Filters it with a three-term expression: time until the matching rows are on screen (with
   an estimated count), against the store answering the same questions directly (its estimate
   and the page on screen: the least the table can take); then until the exact count is in.
4. Scrolls to the top and back to the end (time until the last row is on screen).
5. Ingests ``--rate`` requests/s for ``--seconds`` s: a writer *process* records exchanges through
   the Recorder and streams the committed ids to the inspector process (as /api/events does);
   it reports the lag from submit to the row on screen (p50/p95/max) and the CPU the inspector
   process used.

Every figure is printed against its target (at 1M rows: first paint < 500 ms, filter < 300 ms
and <= 1.5x the store alone, lag p95 < 150 ms, CPU < 40 % of a core, RSS < 120 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtunnel.capture.model import Exchange, Headers, Request, Response, new_id  # noqa: E402
from devtunnel.capture.store import Store  # noqa: E402
from bench.store_fill import fill  # noqa: E402

FILTER = "method:POST path:/api status:>=400"
METHODS = ("GET", "GET", "POST", "PUT", "DELETE")
STATUSES = (200, 200, 201, 204, 301, 404, 422, 500)


def exchange(n: int, now: float) -> Exchange:
    """A realistic small exchange (headers and a short JSON body)."""
    path = f"/api/orders/{n % 977}?page={n % 7}" if n % 3 else f"/webhooks/stripe/{n}"
    body = json.dumps({"id": n, "status": "paid", "amount": n % 10_000}).encode()
    return Exchange(
        id=new_id(now), tunnel="shop", started_at=now,
        request=Request(headers=Headers([("host", "shop.localhost"), ("user-agent", "bench/1"),
                                         ("content-type", "application/json")]),
                        body=body, body_size=len(body), method=METHODS[n % 5], target=path.encode()),
        response=Response(headers=Headers([("content-type", "application/json")]), body=body,
                          body_size=len(body), status=STATUSES[n % 8]),
        target_url="http://127.0.0.1:3000", duration=0.002 + (n % 50) / 1000, ttfb=0.002,
    )


def rss_mb() -> float:
    """Resident set size of this process now, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def writer(db: str, rate: int, seconds: float) -> None:
    """The writer process: record ``rate`` exchanges a second, print each commit's ids as JSON."""
    from devtunnel.capture.recorder import Recorder

    store = Store(db, max_exchanges=1_000_000)
    recorder = Recorder(store)
    submitted: dict[str, float] = {}

    def committed(ids: list[str]) -> None:
        sent = [submitted.pop(i, time.time()) for i in ids]
        print(json.dumps({"ids": ids, "submitted": min(sent), "committed": time.time()}), flush=True)

    recorder.subscribe(committed)
    start = time.monotonic()
    n = 0
    tick = 0.01
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate)
        while n < due:
            ex = exchange(n, time.time())
            submitted[ex.id] = time.time()
            recorder.submit(ex)
            n += 1
        time.sleep(tick)
    recorder.close()
    store.close()


async def inspect(db: Path, rate: int, seconds: float) -> None:
    from devtunnel.capture.filters import parse
    from devtunnel.tui.app import InspectorApp
    from devtunnel.tui.backend import Backend
    from devtunnel.tui.widgets import RequestTable

    async def until(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise SystemExit("bench: timed out")
            await asyncio.sleep(0.002)

    def bottom_drawn() -> bool:
        return table.total > 0 and table.row_at(table.total - 1) is not None

    started = time.perf_counter()
    app = InspectorApp(Backend(db))
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(RequestTable)
        await until(bottom_drawn)
        await painted(table)
        first_paint = time.perf_counter() - started
        report("first paint", first_paint * 1000, "ms", f"({table.total:,} rows)", "< 500 ms", first_paint < 0.5)
        report("RSS after open", rss_mb(), "MB", "", "< 120 MB", rss_mb() < 120)

        flt = parse(FILTER)
        store = Store(db, readonly=True)
        page = table.size.height
        t = time.perf_counter()
        store.count_estimate(flt)
        store.rows_before(flt, limit=3 * page)
        direct = time.perf_counter() - t
        t = time.perf_counter()
        expected = store.count(flt)
        direct_count = time.perf_counter() - t
        t = time.perf_counter()
        every_id = len(store.ids(flt))
        direct_ids = time.perf_counter() - t
        store.close()
        assert every_id == expected
        # The direct reads above held the event loop: let the app catch up, as it would have
        # before a user typed the filter.
        await asyncio.sleep(0.5)
        await painted(table)
        t = time.perf_counter()
        app.live.set_filter(FILTER, flt)
        await until(lambda: getattr(table.source, "filter", None) is flt and bottom_drawn())
        await painted(table)
        shown = time.perf_counter() - t
        await until(lambda: table.total_exact and table.total == expected)
        counted = time.perf_counter() - t
        report("filter", shown * 1000, "ms",
               f"(matching rows on screen, count estimated; the store alone reads the same in "
               f"{direct * 1000:.0f} ms)", "< 300 ms", shown < 0.3)
        ratio = counted / direct_count
        report("  exact count", counted * 1000, "ms",
               f"({expected:,} matches of {FILTER!r}; the store's count alone {direct_count * 1000:.0f} ms, "
               f"ratio {ratio:.2f}; every id {direct_ids * 1000:.0f} ms)", "ratio <= 1.5", ratio <= 1.5)
        app.live.set_filter("", parse(""))
        await until(lambda: getattr(table.source, "filter", 0) is None and bottom_drawn() and table.total > expected)

        await pilot.press("home")
        await until(lambda: table.row_at(0) is not None)
        t = time.perf_counter()
        await pilot.press("end")
        await until(bottom_drawn)
        await painted(table)
        report("scroll to end", (time.perf_counter() - t) * 1000, "ms", "", "", None)
        report("RSS before ingest", rss_mb(), "MB", f"(window {len(table.window)} rows)", "< 120 MB", rss_mb() < 120)

        lags, cpu = await ingest(app, table, db, rate, seconds)
        lags.sort()
        p95 = lags[int(len(lags) * 0.95) - 1] if lags else float("nan")
        report("live lag p95", p95 * 1000, "ms",
               f"(p50 {statistics.median(lags) * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms over {len(lags):,} commits)",
               "< 150 ms", p95 < 0.15)
        report("inspector CPU", cpu * 100, "%", f"of one core at {rate}/s", "< 40 %", cpu < 0.4)
        report("RSS at the end", rss_mb(), "MB", "", "< 120 MB", rss_mb() < 120)
        report("rows read", table.rows_read, "", f"in {table.reads} pages, over the whole run", "", None)


async def painted(widget) -> None:  # type: ignore[no-untyped-def]
    """Wait until ``widget`` has been drawn with what it holds now (the next refresh)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    widget.call_after_refresh(lambda: done.done() or done.set_result(None))
    await done


def report(what: str, value: float, unit: str, detail: str, target: str, met: bool | None) -> None:
    """One figure against its target."""
    verdict = "" if met is None else ("ok " if met else "MISSED ")
    print(f"{what:18s} {value:8,.0f} {unit:3s} {detail}" + (f"   {verdict}target {target}" if target else ""),
          flush=True)


async def ingest(app, table, db: Path, rate: int, seconds: float) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    """Run the writer process; return submit-to-screen lags, one per commit, and the CPU share used."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--writer", str(db), "--rate", str(rate), "--seconds", str(seconds),
        stdout=subprocess.PIPE)
    waiting: list[tuple[str, float, float]] = []
    lags: list[float] = []
    ui_lags: list[float] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            message = json.loads(line)
            app.live.changed(message["ids"])
            waiting.append((max(message["ids"]), message["submitted"], message["committed"]))

    async def watch() -> None:
        while True:
            # A commit is on screen once the bottom row of the (following) table is it or newer, and
            # that row is drawn: rows that scrolled past between two frames were never meant to be read.
            bottom = table.ids[-1] if table.ids else ""
            if table.cached_row(bottom) is not None:
                while waiting and waiting[0][0] <= bottom:
                    _, submitted, committed = waiting.pop(0)
                    lags.append(time.time() - submitted)
                    ui_lags.append(time.time() - committed)
            await asyncio.sleep(0.002)

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    watcher = asyncio.create_task(watch())
    await read()
    await process.wait()
    deadline = time.monotonic() + 5
    while waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    watcher.cancel()
    wall = time.perf_counter() - t
    used = resource.getrusage(resource.RUSAGE_SELF)
    busy = (used.ru_utime - cpu.ru_utime) + (used.ru_stime - cpu.ru_stime)
    print(f"ingest           {rate}/s for {seconds:.0f} s: {len(waiting)} commits never shown")
    ui_lags.sort()
    if ui_lags:
        print(f"  of which from store commit to screen: p50 {statistics.median(ui_lags) * 1000:.0f} ms, "
              f"p95 {ui_lags[int(len(ui_lags) * 0.95) - 1] * 1000:.0f} ms")
    return lags, busy / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--db", help="use this store (built first if missing); the live run adds to it")
    parser.add_argument("--writer", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--build", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        writer(args.writer, args.rate, args.seconds)
        return
    if args.build:
        fill(Path(args.build), args.rows, lambda n, start: exchange(n, start + n / 100))
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "captures.db"
        if not db.exists():
            # In a child process, so that what building costs is not counted in the inspector's RSS.
            t = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--build", str(db), "--rows", str(args.rows)], check=True)
            print(f"store of {args.rows:,} exchanges built in {time.perf_counter() - t:.1f} s")
        asyncio.run(inspect(db, args.rate, args.seconds))


if __name__ == "__main__":
    main()
