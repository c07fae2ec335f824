"""``devtunnel requests`` and ``show`` tell a request held for the app (``--hold``) from one in flight."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from devtunnel.capture.store import Store
from devtunnel.values.exchange_ids import new_id
from tests.kit.exchanges import make_exchange, make_response
from tests.test_cli_captures import DEVTUNNEL


def _run(db: Path, *args: str) -> str:
    proc = subprocess.run([DEVTUNNEL, *args, "--db", str(db)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "100", "LINES": "40"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)
    return proc.stdout


def test_requests_says_held_and_show_says_how_long(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    holding = make_exchange("GET", "/waits", id=new_id(), held=2.5, holding=True)
    slow = make_exchange("GET", "/slow", id=new_id())
    sent = make_exchange("POST", "/hook", id=new_id(), response=make_response(200), duration=3.5, ttfb=3.4,
                         held=3.25)
    store = Store(db)
    store.put_many([holding, slow, sent])
    store.close()
    listed = _run(db, "requests").splitlines()
    [waits] = [line for line in listed if "/waits" in line]
    [in_flight] = [line for line in listed if "/slow" in line]
    assert " held " in waits and "…" not in waits
    assert "…" in in_flight and "held" not in in_flight
    rows = {r["path"]: r for r in json.loads(_run(db, "requests", "--json"))}
    assert (rows["/waits"]["held_ms"], rows["/waits"]["holding"]) == (2500.0, True)
    assert (rows["/slow"]["held_ms"], rows["/slow"]["holding"]) == (None, False)
    assert (rows["/hook"]["held_ms"], rows["/hook"]["holding"]) == (3250.0, False)
    assert "held 3.25 s while the app was down" in _run(db, "show", sent.id)
    assert "held 2.50 s so far, until the app is back" in _run(db, "show", holding.id)
    assert "held" not in _run(db, "show", slow.id)
