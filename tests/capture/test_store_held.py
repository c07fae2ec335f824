"""The ``held`` column: how long a request waited for the app devtunnel runs (``--hold``), negative
while it still waits; a file of schema 10 reads as never held, and an agent of schema 10 writes on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from devtunnel.capture.model import held_text
from devtunnel.capture.schema import SCHEMA_VERSION
from devtunnel.capture.store import Store
from tests.capture.test_store import make
from tests.capture.test_store_webhooks import TO_SCHEMA_10


def test_a_held_request_reads_back_held_in_its_row_its_exchange_and_its_summary(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    holding, delivered, plain = make(1, status=None), make(2), make(3)
    holding.held, holding.holding = 1.5, True
    delivered.held = 3.25
    store.put_many([holding, delivered, plain])
    assert [(r.held, r.holding) for r in store.rows()] == [(1.5, True), (3.25, False), (None, False)]
    got = store.get(holding.id)
    assert (got.held, got.holding) == (1.5, True)
    assert got.summary()["held_ms"] == 1500.0 and got.summary()["holding"] is True
    assert held_text(got) == "1.50 s so far, until the app is back"
    # The snapshot is replaced by the finished record: held no more, the wait kept.
    holding.holding, holding.held = False, 2.0
    store.put(holding)
    assert (store.rows()[0].held, store.rows()[0].holding) == (2.0, False)
    assert held_text(store.get(holding.id)) == "2.00 s while the app was down"
    assert held_text(store.get(plain.id)) == "" and store.get(plain.id).summary()["held_ms"] is None
    # A wait just begun is still a wait (stored negative: at least a microsecond).
    fresh = make(4, status=None)
    fresh.held, fresh.holding = 0.0, True
    store.put(fresh)
    assert store.rows()[-1].holding is True
    store.close()


def test_a_schema_10_file_is_upgraded_and_reads_as_never_held(tmp_path: Path) -> None:
    path = tmp_path / "v10.db"
    old = make(1)
    first = Store(path)
    first.put(old)
    first.close()
    with sqlite3.connect(path) as conn:
        conn.executescript(TO_SCHEMA_10 + "PRAGMA user_version = 10;")
    again = Store(path)
    assert again.get(old.id) == old and again.rows()[0].held is None
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    new = make(2)
    new.held = 0.5
    again.put(new)
    assert [r.held for r in again.rows()] == [None, 0.5]
    again.close()
