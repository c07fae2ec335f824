"""``devtunnel export --filter`` in every format on a large store: the baseline tree against this one.

    .venv/bin/python bench/export_stream.py --base /tmp/base [--rows 20000] [--body-kb 50] [--db PATH]
    .venv/bin/python bench/export_stream.py --base /tmp/base --varied

With ``--varied``, the store is instead the exchanges of every kind an export treats apart
(``tests/export/test_cli_export_streamed.varied``), and each format, with and without
``--redact``, to ``-o FILE`` and to a pipe, is compared between the two trees (bytes, side files,
exit code); no figures.

Builds a store of ``--rows`` exchanges whose request bodies are ``--body-kb`` KB of JSON (one in
fifty binary, so curl, httpie and raw write side files) unless ``--db`` names one, then runs
``python -m devtunnel --db DB export --filter path:/hook --format F -o OUT`` from ``--base`` (the
baseline: ``git archive BASE_COMMIT devtunnel | tar -x -C /tmp/base``) and from ``--tree``, in
turns, each into the same folder (the text names the side files by it), and prints the seconds and the max RSS of each, and whether
the two outputs (the file and every side file) are the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtunnel.capture.model import Exchange, Headers, Request, Response, new_id  # noqa: E402
from devtunnel.capture.store import Store  # noqa: E402

FORMATS = ["curl", "httpie", "raw", "pytest", "har"]


def make(n: int, body_kb: int, t0: float) -> Exchange:
    if n % 50 == 49:
        body, kind = bytes(range(256)) * (body_kb * 4), b"application/octet-stream"
    else:
        body, kind = b'{"n": %d, "text": "' % n + b"x" * (body_kb * 1024 - 40) + b'"}', b"application/json"
    headers = Headers([(b"Host", b"shop.example"), (b"Content-Type", kind), (b"Content-Length", str(len(body)).encode())])
    request = Request(method="POST", target=f"/hook/{n}".encode(), headers=headers, body=body, body_size=len(body))
    response = Response(status=204, reason="", headers=Headers([]), body=b"", body_size=0)
    return Exchange(id=new_id(), tunnel="demo", started_at=t0 + n / 1000, request=request, response=response,
                    target_url="http://127.0.0.1:9", duration=0.002)


def fill(db: Path, rows: int, body_kb: int) -> None:
    store = Store(db, max_exchanges=rows + 1, max_bytes=2**62)
    t0 = time.time() - 3600
    for start in range(0, rows, 200):
        store.put_many([make(n, body_kb, t0) for n in range(start, min(rows, start + 200))])
    store.close()


def run(tree: Path, db: Path, fmt: str, folder: Path) -> tuple[float, int]:
    """Seconds and max RSS (KB) of the export from ``tree``, written into ``folder``, under
    ``/usr/bin/time`` (a child's max RSS starts at its parent's: this process's is not counted)."""
    with tempfile.NamedTemporaryFile("r") as times:
        subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", times.name, sys.executable, "-m", "devtunnel",
                        "--db", str(db), "export", "--filter", "path:/hook", "--format", fmt,
                        "-o", str(folder / f"out.{fmt}")],
                       env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        seconds, rss = times.read().split()[-2:]
    return float(seconds), int(rss)


def digest(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file in ``folder``, read a MiB at a time."""
    out = {}
    for path in sorted(folder.iterdir()):
        with path.open("rb") as file:
            out[path.name] = hashlib.file_digest(file, "sha256").hexdigest()
    return out


def compare_varied(base: Path, tree: Path, work: Path) -> int:
    """The outputs of both trees for the varied store; returns how many differ."""
    from tests.export.test_cli_export_streamed import FILTERS, varied

    db = work / "varied.db"
    Store(db).put_many(varied())
    differ = 0
    for fmt, expression in FILTERS.items():
        for extra in ([], ["--redact"]):
            for to in ("file", "pipe"):
                got = []
                for one in (base, tree):
                    folder = work / "varied"
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.mkdir()
                    args = [sys.executable, "-m", "devtunnel", "--db", str(db), "export", f"--filter={expression}",
                            "--format", fmt, *extra] + (["-o", str(folder / "out")] if to == "file" else [])
                    done = subprocess.run(args, cwd=folder if to == "pipe" else one, capture_output=True,
                                          env={**os.environ, "PYTHONPATH": str(one.resolve())}, timeout=120)
                    got.append((done.returncode, done.stdout, digest(folder)))
                same = got[0] == got[1]
                differ += not same
                print(f"{fmt:8} {' '.join(extra) or '-':9} {to:5} exit {got[1][0]}, {len(got[1][2])} file(s), "
                      f"{len(got[1][1]):,} bytes to stdout: {'same' if same else 'DIFFERENT'}")
    return differ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="the baseline tree (a folder holding devtunnel/)")
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent, help="this tree")
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--body-kb", type=int, default=50)
    ap.add_argument("--db", type=Path, help="a store made by an earlier run (else one is made and removed)")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--varied", action="store_true", help="compare the outputs for a store of every kind of exchange")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="export-stream-") as scratch:
        work = Path(scratch)
        if args.varied:
            differ = compare_varied(args.base, args.tree, work)
            print(f"{differ} output(s) differ")
            raise SystemExit(1 if differ else 0)
        db = args.db
        if db is None or not db.exists():
            db = db or work / "captures.db"
            started = time.perf_counter()
            fill(db, args.rows, args.body_kb)
            print(f"store: {args.rows:,} exchanges of {args.body_kb} KB, {db.stat().st_size / 1e6:,.0f} MB, "
                  f"made in {time.perf_counter() - started:.1f} s")
        print(f"{'format':8} {'base s':>8} {'base MB':>8} {'tree s':>8} {'tree MB':>8}  output")
        for fmt in args.formats.split(","):
            figures: list[float] = []
            outputs = []
            for tree in (args.base, args.tree):
                folder = work / fmt  # the same path: the text names the side files by it
                folder.mkdir()
                seconds, rss = run(tree.resolve(), db, fmt, folder)
                figures += [seconds, rss / 1024]
                outputs.append(digest(folder))
                shutil.rmtree(folder)
            same = "same bytes" if outputs[0] == outputs[1] else "DIFFERENT"
            files = len(outputs[0])
            print(f"{fmt:8} {figures[0]:8.2f} {figures[1]:8.0f} {figures[2]:8.2f} {figures[3]:8.0f}  "
                  f"{same} ({files} file{'s' if files != 1 else ''})", flush=True)


if __name__ == "__main__":
    main()
