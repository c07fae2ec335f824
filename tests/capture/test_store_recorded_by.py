"""The run that recorded each exchange (``exchange_rows.run``, schema 12): what one agent recorded in a
file that several record into, under the same tunnel name too (``runs.RecordedBy``, the agent API's
``scope=agent``); a file of schema 11 keeps its exchanges as nobody's, and an agent of schema 11 writes on."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from devtunnel.capture.filters import And, parse
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.runs import RecordedBy, this_run
from devtunnel.capture.schema import SCHEMA_VERSION
from devtunnel.capture.store import Store

from .test_store import _steps, make
from .test_store_webhooks import TO_SCHEMA_11


def run_of(db: Path, exchange_id: str) -> str | None:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT run FROM exchange_rows WHERE id = ?", (exchange_id,)).fetchone()[0]


def test_two_recorders_of_one_tunnel_name_on_one_file_each_find_and_clear_their_own(tmp_path: Path) -> None:
    # Two agents on one port share the tunnel name remembered for it: told apart by name and start
    # time, one agent's clear forgot the other's captures.
    db = tmp_path / "captures.db"
    one, two = Recorder(Store(db)), Recorder(Store(db))
    try:
        mine, live, theirs = [make(1), make(2)], replace(make(3), duration=None), make(4)
        for ex in (*mine, live):
            one.submit(ex)
        two.submit(theirs)
        one.flush()
        two.flush()
        one.submit(replace(live, duration=0.5))  # its live snapshot, then the finished exchange
        one.flush()
        earlier = make(5)
        store = Store(db)
        store.put(earlier)  # no run: an earlier session's, an import's
        store.put(replace(theirs, duration=1.0))  # written again without a run: still the recorder's
        assert {r.tunnel for r in store.rows()} == {"web"}
        assert store.ids(RecordedBy(one.run.id)) == [mine[0].id, mine[1].id, live.id]
        assert store.ids(RecordedBy(two.run.id)) == [theirs.id]
        assert [r.id for r in store.rows(RecordedBy(one.run.id), limit=1, newest_first=True)] == [live.id]
        assert store.ids(RecordedBy("nobody")) == [] and run_of(db, earlier.id) is None

        store.clear_matching(RecordedBy(one.run.id))
        assert store.ids() == [theirs.id, earlier.id]
        store.clear_matching(RecordedBy(two.run.id))
        assert store.ids() == [earlier.id] and store.count() == 1
        store.close()
    finally:
        one.close()
        two.close()


def test_an_exchange_cut_to_fit_the_store_keeps_its_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db", max_bytes=1_000_000)
    run = this_run()
    big = make(1, body=b"x" * 2_000_000)
    store.put(big, run=run)
    got = store.get(big.id)
    assert got.request.body_truncated and store.ids(RecordedBy(run.id)) == [big.id]
    store.close()


def test_a_page_of_one_runs_newest_reads_the_page_not_the_other_runs(tmp_path: Path) -> None:
    # The agent API lists 50 of its own newest on every poll: in a large store of other agents' and
    # earlier sessions' exchanges, a walk in id order would read them all when the agent has few.
    small, large = Store(tmp_path / "s.db"), Store(tmp_path / "l.db")
    me, others = this_run(), this_run()
    exs = [make(i, now=1_700_000_000 + i / 100) for i in range(6010)]
    small.put_many(exs[:10], run=me)
    large.put_many(exs[:10], run=me)
    large.put_many(exs[10:], run=others)
    page_small, steps_small = _steps(small, lambda: small.rows(RecordedBy(me.id), limit=5, newest_first=True))
    page_large, steps_large = _steps(large, lambda: large.rows(RecordedBy(me.id), limit=5, newest_first=True))
    assert [r.id for r in page_large] == [r.id for r in page_small] == [e.id for e in exs[9:4:-1]]
    assert steps_large < 2 * steps_small + 2, (steps_small, steps_large)
    # Narrowed to a tunnel and a filter as the API narrows it, a page still walks the run's index.
    conn = large._conn()
    where, params = And([RecordedBy(me.id), parse("tunnel:web method:POST")]).sql()
    plan = " ".join(str(r[-1]) for r in conn.execute(
        f"EXPLAIN QUERY PLAN SELECT id FROM exchange_rows e WHERE {where} ORDER BY e.id DESC LIMIT 50", params))
    assert "exchange_rows_run" in plan and "TEMP B-TREE" not in plan, plan
    small.close()
    large.close()


def test_a_run_is_known_to_the_store_only() -> None:
    with pytest.raises(TypeError, match="known to the store only"):
        RecordedBy("r")(make(1))


_SCHEMA_11_COLUMNS = (
    "id", "tunnel", "started_at", "method", "target_text", "path", "host", "scheme", "status",
    "duration", "ttfb", "size", "websocket", "has_response", "bytes",
    "target", "remote_addr", "target_url", "error_message", "req_version",
    "req_body_size", "req_truncated", "res_version", "res_reason", "res_body_size", "res_truncated", "edited",
    "error", "replay_of", "ws_close_code", "rule_index", "rule_action", "rule_scope", "resigned", "held",
    "wh_provider", "wh_event", "wh_delivery", "wh_signature", "wh_reason", "wh_duplicate_of",
)
"""The columns schema 11's writer names in each insert and upsert of ``exchange_rows``."""
_SCHEMA_11_UPSERT = (f"INSERT INTO exchange_rows ({', '.join(_SCHEMA_11_COLUMNS)}) VALUES "
                     f"({', '.join('?' * len(_SCHEMA_11_COLUMNS))}) ON CONFLICT(id) DO UPDATE SET "
                     + ", ".join(f"{c} = excluded.{c}" for c in _SCHEMA_11_COLUMNS[1:]))


def test_a_schema_11_file_is_upgraded_its_exchanges_are_nobodys_and_a_schema_11_writer_writes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "v11.db"
    first = Store(path)
    old = make(1)
    first.put(old, run=this_run())
    first.close()
    with sqlite3.connect(path) as conn:
        conn.executescript(TO_SCHEMA_11 + "PRAGMA user_version = 11;")
    # An agent of schema 11 has the file open (it checked the version once, then) when a newer one upgrades it.
    writer = sqlite3.connect(path, isolation_level=None)
    row = writer.execute(f"SELECT {', '.join(_SCHEMA_11_COLUMNS)} FROM exchange_rows").fetchone()

    store = Store(path)
    assert (f"upgrading the capture database from schema 11 to {SCHEMA_VERSION} (once; a large one takes a while); "
            "an older devtunnel still running on it records on, but its API's list and clear of its own captures "
            "take in those of another agent's tunnel of the same name: restart it with this version") in caplog.text
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM exchange_rows WHERE run IS NOT NULL").fetchone()[0] == 0
    assert store.get(old.id) == old

    late = make(2)
    writer.execute("BEGIN IMMEDIATE")  # the old writer's own statements: its rows say no run
    writer.execute(_SCHEMA_11_UPSERT, (late.id, *row[1:]))
    writer.execute("UPDATE stats SET n = n + 1, bytes = bytes + ?", (row[_SCHEMA_11_COLUMNS.index("bytes")],))
    writer.execute("COMMIT")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute(_SCHEMA_11_UPSERT, (late.id, *row[1:]))  # written again (an update in place)
    writer.execute("COMMIT")
    writer.close()

    run = this_run()
    mine = make(3)
    store.put(mine, run=run)
    assert store.ids() == [old.id, late.id, mine.id] and store.count() == 3
    assert store.ids(RecordedBy(run.id)) == [mine.id]
    assert run_of(path, late.id) is None and run_of(path, old.id) is None
    store.close()
