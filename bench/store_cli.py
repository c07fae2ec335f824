"""The capture commands on a large store: wall time and max RSS of each, for two trees in one run.

    .venv/bin/python bench/store_cli.py [--rows 1000000] [--db PATH] [--base /tmp/base] [--tree .]

Builds a store of ``--rows`` exchanges (``bench/store_fill.py`` with ``bench/tui.py``'s exchanges;
one template in a thousand has a 300 KB response body) unless ``--db`` names one, then runs each
command as a user would (``python -m devtunnel --db PATH requests|export ...``, under ``/usr/bin/time``) from
``--base`` (the baseline: a checkout of the commit before) and from ``--tree``, in turns, and
prints seconds and max RSS side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.store_fill import fill  # noqa: E402
from bench.tui import exchange  # noqa: E402
from devtunnel.capture.model import Exchange  # noqa: E402

COMMANDS = [
    ("requests", ["requests"]),  # each run from its tree (python -m puts the working folder first)
    ("requests -n 1000", ["requests", "-n", "1000"]),
    ("requests -n 1000 status:500", ["requests", "-n", "1000", "--filter", "status:500"]),
    ("requests --json -n 0 (25k matches)", ["requests", "--json", "-n", "0", "--filter", "method:DELETE status:500"]),
    ("requests --json -n 0", ["requests", "--json", "-n", "0"]),
    ("requests body:nomatch (a scan)", ["requests", "--filter", "body:zzzznomatch"]),
    ("export --format har (25k matches)", ["export", "--format", "har", "--filter", "method:DELETE status:500"]),
    ("export --format curl (25k matches)", ["export", "--format", "curl", "--filter", "method:DELETE status:500"]),
]


def make(n: int, now: float) -> Exchange:
    ex = exchange(n, now)
    if n == 7 and ex.response is not None:  # one template in a thousand: 1,000 large bodies in a million
        big = json.dumps({"blob": "x" * 300_000, "n": n}).encode()
        ex.response.body, ex.response.body_size = big, len(big)
    return ex


def run(tree: Path, db: Path, args: list[str]) -> tuple[float, int]:
    """Seconds and max RSS (KB) of ``devtunnel --db DB ARGS`` from ``tree`` (its output thrown away)."""
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", out.name, sys.executable, "-m", "devtunnel",
                        "--db", str(db), *args],
                       env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, stdout=subprocess.DEVNULL, check=True)
        seconds, rss = out.read().split()[-2:]
    return float(seconds), int(rss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path)
    ap.add_argument("--base", type=Path, required=True, help="the baseline tree")
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db = args.db
        if db is None:
            db = Path(folder) / "captures.db"
            started = time.monotonic()
            fill(db, args.rows, make)
            print(f"built {args.rows:,} exchanges in {time.monotonic() - started:.1f} s")
        print(f"{'command':40} {'base s':>8} {'base MB':>8} {'tree s':>8} {'tree MB':>8}")
        for label, extra in COMMANDS:
            base = run(args.base, db, extra)
            tree = run(args.tree, db, extra)
            print(f"{label:40} {base[0]:8.2f} {base[1] / 1024:8.0f} {tree[0]:8.2f} {tree[1] / 1024:8.0f}")


if __name__ == "__main__":
    main()
