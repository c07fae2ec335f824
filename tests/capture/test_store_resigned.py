"""The ``resigned`` column: a replay signed afresh names its provider; older files read as not re-signed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from devtunnel.capture.schema import SCHEMA_VERSION
from devtunnel.capture.store import Store
from tests.capture.test_store import make
from tests.capture.test_store_webhooks import TO_SCHEMA_7


def test_a_resigned_replay_keeps_its_provider_in_the_row_the_exchange_and_the_summary(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    original, replay = make(1), make(2)
    replay.replay_of, replay.resigned = original.id, "stripe"
    store.put_many([original, replay])
    assert [r.resigned for r in store.rows()] == [None, "stripe"]
    assert store.get(replay.id).resigned == "stripe"
    assert store.get(replay.id).summary()["resigned"] == "stripe"
    assert store.get(original.id).summary()["resigned"] is None
    store.close()


def test_a_version_3_file_is_upgraded_and_its_replays_read_as_not_resigned(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    old = make(1)
    first = Store(path)
    first.put(old)
    first.close()
    with sqlite3.connect(path) as conn:  # back to the layout of schema 3
        conn.executescript(TO_SCHEMA_7 + "ALTER TABLE exchanges DROP COLUMN resigned; PRAGMA user_version = 5;")
    again = Store(path)
    assert again.get(old.id) == old and again.rows()[0].resigned is None
    new = make(2)
    new.resigned = "github"
    again.put(new)
    assert [r.resigned for r in again.rows()] == [None, "github"]
    again.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
