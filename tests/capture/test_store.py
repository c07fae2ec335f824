"""The SQLite store: exact round trips, restarts, retention, prefixes, and every way a file can be bad."""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from devtunnel.capture.model import Exchange, Headers, Response, WsMessage, new_id
from devtunnel.capture.rows import Row, decode_headers, encode_headers
from devtunnel.capture.schema import _SCHEMA_V1, SCHEMA_VERSION
from devtunnel.capture import store as store_module
from devtunnel.capture.store import Store
from devtunnel.values.paths import db_path
from devtunnel.errors import NotFoundError, StoreError

from tests.kit.exchanges import make_exchange, make_response

from .strategies import exchanges, header_fields
from .test_store_writes import assert_consistent
from .test_store_webhooks import TO_SCHEMA_3, TO_SCHEMA_7, TO_SCHEMA_8


def make(n: int = 0, *, body: bytes = b"", status: int | None = 200, now: float | None = None,
         ex_id: str | None = None) -> Exchange:
    response = None if status is None else make_response(status, [("content-type", "text/plain")], b"ok")
    return make_exchange("POST", f"/hook/{n}?a=1", [("Host", "a.localhost")], body, response,
                         id=ex_id or new_id(now), tunnel="web", started_at=now or time.time(), duration=0.01 * n)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "captures.db")
    yield s
    s.close()


# --- round trips ------------------------------------------------------------------------------


@given(header_fields)
def test_header_blob_round_trips_any_bytes(fields: list[tuple[bytes, bytes]]) -> None:
    assert decode_headers(encode_headers(Headers(fields))) == tuple(fields)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exchanges())
def test_get_rebuilds_any_exchange_exactly(ex: Exchange) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "c.db")
        store.put(ex)
        assert store.get(ex.id) == ex
        [row] = store.rows()
        odd = ex.request.target if "\ufffd" in ex.request.url_text else None  # the list's raw target
        assert row == Row(ex.id, ex.tunnel, ex.started_at, ex.request.method, ex.request.url_text, ex.request.host,
                          ex.status, ex.duration, ex.size, ex.error, ex.replay_of, ex.websocket, ex.edited,
                          raw_target=odd)
        assert row.display_target == ex.request.display_url
        assert store.query() == [ex]
        store.close()


def test_websocket_messages_round_trip_in_order(store: Store) -> None:
    ex = make(1)
    ex.websocket = True
    ex.ws_messages = [WsMessage("client", 1, 1.5, b"hello"), WsMessage("server", 2, 2.5, b"\x00\xff", size=10_000)]
    ex.ws_close_code = 1000
    store.put(ex)
    assert store.get(ex.id).ws_messages == ex.ws_messages


def test_putting_an_updated_exchange_replaces_it_and_keeps_the_byte_count_right(store: Store) -> None:
    ex = make(1, status=None)
    store.put(ex)
    done = replace(ex, response=Response(status=201, body=b"x" * 5000, body_size=5000), duration=0.2)
    store.put(done)
    assert store.count() == 1
    assert store.get(ex.id) == done
    conn = sqlite3.connect(store.path)
    assert store.total_bytes() == conn.execute("SELECT sum(bytes) FROM exchanges").fetchone()[0]
    conn.close()


def test_put_many_with_two_versions_of_an_id_keeps_the_later(store: Store) -> None:
    ex = make(1, status=None)
    ex.websocket, ex.ws_messages = True, [WsMessage("client", 1, 1.0, b"a")]
    later = replace(ex, response=Response(status=101), ws_messages=[WsMessage("client", 1, 1.0, b"a"),
                                                                    WsMessage("server", 1, 2.0, b"b")])
    store.put_many([ex, later])
    assert store.get(ex.id) == later
    assert store.count() == 1


def test_rows_read_no_header_or_body_table(store: Store) -> None:
    store.put_many(make(i, body=b"secret" * 100) for i in range(5))
    conn = store._conn()

    def deny_blob_tables(action: int, table: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_READ and table in ("heads", "req_bodies", "res_bodies", "ws_messages"):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    conn.set_authorizer(deny_blob_tables)
    try:
        assert len(store.rows()) == 5
        assert len(store.rows("method:POST status:200")) == 5
        with pytest.raises(StoreError):  # the guard is real: reading a body is refused
            store.get(store.ids()[0])
    finally:
        conn.set_authorizer(None)


# --- queries ----------------------------------------------------------------------------------


def test_order_limit_offset_and_newest_first(store: Store) -> None:
    exs = [make(i, now=1_700_000_000 + i) for i in range(10)]
    store.put_many(reversed(exs))
    ids = [e.id for e in exs]
    assert store.ids() == ids
    assert [r.id for r in store.rows(limit=3)] == ids[:3]
    assert [r.id for r in store.rows(limit=3, offset=8)] == ids[8:]
    assert [e.id for e in store.query(newest_first=True, limit=2)] == ids[::-1][:2]
    assert [r.id for r in store.rows(offset=7)] == ids[7:]


def test_a_limit_or_offset_past_sqlites_integers_is_no_limit_or_nothing(store: Store) -> None:
    exs = [make(i) for i in range(3)]
    store.put_many(exs)
    huge = 10**20  # beyond SQLite's 64-bit INTEGER
    assert [r.id for r in store.rows(limit=huge)] == [e.id for e in exs]
    assert [e.id for e in store.query(limit=huge, newest_first=True)] == [e.id for e in reversed(exs)]
    assert store.rows(offset=huge) == []


def test_rows_by_id_keeps_the_given_order_and_skips_missing(store: Store) -> None:
    exs = [make(i) for i in range(3)]
    store.put_many(exs)
    wanted = [exs[2].id, "missing", exs[0].id]
    assert [r.id for r in store.rows_by_id(wanted)] == [exs[2].id, exs[0].id]


def test_filters_accept_strings_and_compiled_filters(store: Store) -> None:
    from devtunnel.capture.filters import parse

    store.put_many([make(1, status=404), make(2, status=200), make(3, status=None)])
    assert store.count("status:404") == 1
    assert store.count(parse("status:404 or ~q")) == 2
    assert store.count("") == 3
    assert store.count(None) == 3


def test_get_accepts_a_unique_case_insensitive_prefix(store: Store) -> None:
    ex = make(1, ex_id="01HQ3R8N5X6TJ2K9W7YB4C1DFA")
    other = make(2, ex_id="01HQ4000000000000000000000")
    store.put_many([ex, other])
    assert store.get(ex.id[:12].lower()).id == ex.id
    assert store.get(ex.id).id == ex.id


def _steps(store: Store, call: Callable[[], object]) -> tuple[object, int]:
    """What ``call()`` returns, and the SQLite VM steps it took on the store's connection (in 100s)."""
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn = store._conn()
    conn.set_progress_handler(tick, 100)
    try:
        return call(), steps
    finally:
        conn.set_progress_handler(None, 100)


def test_short_ids_of_many_read_the_ids_around_them_not_the_whole_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``devtunnel requests -n 1000`` on a store of a million read every id (100 MB) for its prefixes."""
    small, large = Store(tmp_path / "s.db"), Store(tmp_path / "l.db")
    exs = [make(i, now=1_700_000_000 + i / 100) for i in range(6000)]
    small.put_many(exs[-600:])
    large.put_many(exs)
    newest = [e.id for e in exs[-300:]]  # past _SHORT_IDS_BY_QUERY
    short_small, steps_small = _steps(small, lambda: small.short_ids(newest))
    short_large, steps_large = _steps(large, lambda: large.short_ids(newest))
    assert steps_large < 2 * steps_small  # grows with the ids asked for, not with the store
    assert short_large == short_small
    spread = [e.id for e in exs[::15]]  # 400 ids over 6,000
    with_span = large.short_ids(spread)
    monkeypatch.setattr(store_module, "_SHORT_IDS_SPAN", 4)  # too thin: each one's neighbours are looked up
    assert large.short_ids(spread) == with_span
    monkeypatch.setattr(store_module, "_SHORT_IDS_BY_QUERY", 10_000)
    assert with_span == large.short_ids(spread) and large.short_ids(newest) == short_large


def test_ambiguous_or_unknown_ids_raise_not_found(store: Store) -> None:
    now = time.time()
    a, b = make(1, now=now), make(2, now=now)  # the same millisecond: the first 10 digits are shared
    store.put_many([a, b])
    with pytest.raises(NotFoundError, match="ambiguous"):
        store.get(a.id[:10])
    with pytest.raises(NotFoundError, match="no exchange"):
        store.get("ZZZZ")
    with pytest.raises(NotFoundError):
        store.get("")


def test_hostile_ids_are_only_data(store: Store) -> None:
    ex = replace(make(1), id="a%_'\"\\;--")
    store.put(ex)
    assert store.get("A%_'").id == ex.id
    with pytest.raises(NotFoundError):
        store.get("a_")
    assert store.delete(["%"]) == 0 and store.count() == 1


def test_delete_and_clear(store: Store) -> None:
    exs = [make(i, body=b"b") for i in range(4)]
    store.put_many(exs)
    assert store.delete([exs[0].id, exs[1].id, "nope"]) == 2
    assert store.ids() == [exs[2].id, exs[3].id]
    store.clear()
    assert store.count() == 0 and store.total_bytes() == 0
    conn = sqlite3.connect(store.path)
    assert conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == 0
    conn.close()


def test_clear_deletes_in_runs_each_its_own_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One transaction for a million exchanges held the write lock 3.4 s: the agent's recorder waited."""
    monkeypatch.setattr(store_module, "CLEAR_RUN", 10, raising=False)
    store = Store(tmp_path / "c.db")
    store.put_many(make(i, body=b"b" * i, now=1_700_000_000 + i) for i in range(45))
    statements: list[str] = []
    store._conn().set_trace_callback(statements.append)
    try:
        store.clear()
    finally:
        store._conn().set_trace_callback(None)
    assert statements.count("BEGIN IMMEDIATE") == 5  # 10, 10, 10, 10 and 5: the recorder writes between
    assert store.count() == 0 and store.total_bytes() == 0
    assert store._conn().execute("SELECT count(*) FROM bodies").fetchone()[0] == 0
    store.clear()  # an empty store: nothing to do
    later = make(99, now=1_700_000_100)
    store.put(later)
    assert store.ids() == [later.id] and store.count() == 1


@pytest.mark.parametrize("how", ["query", "get"])
def test_a_full_read_sees_one_state_while_the_agent_deletes_the_oldest(tmp_path: Path, how: str) -> None:
    """``export --filter`` read an exchange's row, then retention deleted it, then its headers were
    gone: ``struct.error`` and a traceback (1M store, agent recording at 1,000/s)."""
    reader, writer = Store(tmp_path / "c.db"), Store(tmp_path / "c.db")
    exs = [make(i, body=b"b", now=1_700_000_000 + i) for i in range(3)]
    reader.put_many(exs)
    deleted: list[int] = []

    def retention(statement: str) -> None:
        if statement.startswith("SELECT req, res FROM heads") and not deleted:
            deleted.append(writer.delete([e.id for e in exs]))  # another connection, between two reads

    reader._conn().set_trace_callback(retention)
    try:
        got = reader.query() if how == "query" else [reader.get(exs[0].id)]
    finally:
        reader._conn().set_trace_callback(None)
    assert deleted == [3] and reader.count() == 0
    assert got == (exs if how == "query" else exs[:1])


# --- retention --------------------------------------------------------------------------------


def test_retention_by_count_drops_the_oldest(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db", max_exchanges=10)
    exs = [make(i, now=1_700_000_000 + i) for i in range(25)]
    for ex in exs:
        store.put(ex)
    assert store.ids() == [e.id for e in exs[-10:]]


def test_retention_by_bytes_drops_the_oldest_and_keeps_the_total_under_the_limit(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db", max_bytes=20_000)
    exs = [make(i, body=b"x" * 1000, now=1_700_000_000 + i) for i in range(60)]
    for ex in exs:
        store.put(ex)
    kept = store.ids()
    assert 10 <= len(kept) < 20
    assert kept == [e.id for e in exs[-len(kept):]]
    assert store.total_bytes() <= 20_000
    store.put_many(make(100 + i, body=b"y" * 1000, now=1_800_000_000 + i) for i in range(30))
    assert store.total_bytes() <= 20_000
    assert all(i not in store.ids() for i in kept)


def test_retention_at_the_limit_never_counts_or_sums_the_whole_table(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db", max_exchanges=20, max_bytes=15_000)
    store.put_many(make(i, body=b"x" * 500) for i in range(40))
    statements: list[str] = []
    store._conn().set_trace_callback(statements.append)
    try:
        store.put(make(99, body=b"x" * 1500))  # past the bytes left below the limit (RETENTION_RUN)
    finally:
        store._conn().set_trace_callback(None)
    assert any(s.startswith("DELETE FROM exchange_rows") for s in statements)  # something was dropped
    for sql in statements:  # counts and sums only over a limited number of the oldest
        assert "count(" not in sql.lower() and "sum(" not in sql.lower() or "ORDER BY id LIMIT" in sql, sql
        assert "FROM exchange_rows ORDER BY id" not in sql or "LIMIT" in sql, sql


def test_retention_deletes_in_runs_down_to_a_64th_below_the_limit_and_never_keeps_more(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db", max_exchanges=640)
    exs = [make(i, now=1_700_000_000 + i) for i in range(700)]
    store.put_many(exs[:640])
    assert store.count() == 640  # at the limit: nothing deleted yet
    deletes: list[int] = []
    counts: list[int] = []
    for ex in exs[640:]:
        statements: list[str] = []
        store._conn().set_trace_callback(statements.append)
        try:
            store.put(ex)
        finally:
            store._conn().set_trace_callback(None)
        deletes.append(sum(s.startswith("DELETE FROM exchange_rows") for s in statements))
        counts.append(store.count())
    # Over the limit by one: down to 640 - 640 // 64 = 630 at once; then ten writes delete nothing.
    assert counts[:12] == [630, *range(631, 641), 630]
    assert deletes[:12] == [1, *[0] * 10, 1]
    assert max(counts) <= 640
    assert store.ids() == [e.id for e in exs[-counts[-1]:]]  # always the newest
    assert_consistent(store)


def test_a_retention_run_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_RUN_EXCHANGES", 4)  # instead of 640 // 64 = 10
    store = Store(tmp_path / "c.db", max_exchanges=640)
    store.put_many(make(i, now=1_700_000_000 + i) for i in range(641))
    assert store.count() == 636


def test_retention_by_bytes_deletes_down_to_a_64th_below_the_limit(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db", max_bytes=64_000)
    totals: list[int] = []
    for i in range(120):
        store.put(make(i, body=b"x" * 1000, now=1_700_000_000 + i))
        totals.append(store.total_bytes())
    assert max(totals) <= 64_000
    # Each time retention ran, it left at most 63,000 bytes (64,000 less a 64th).
    dropped = [after for before, after in zip(totals, totals[1:]) if after < before]
    assert dropped and all(after <= 64_000 - 64_000 // 64 for after in dropped)


@pytest.mark.parametrize("how", ["delete", "clear"])
def test_what_a_user_deletes_is_overwritten_in_the_file_whatever_the_writes_use(
        tmp_path: Path, how: str) -> None:
    secret = b"sk_live_0123456789abcdef"
    store = Store(tmp_path / "c.db")
    exs = [make(i, body=secret * 80) for i in range(60)]  # about 2 KiB each: leaf pages that become free
    store.put_many(exs)
    if how == "delete":
        assert store.delete([e.id for e in exs]) == 60
    else:
        store.clear()
    conn = store._conn()
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 2  # FAST again for the writes
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    assert secret not in (tmp_path / "c.db").read_bytes()


# --- persistence and concurrency --------------------------------------------------------------


def test_a_new_store_on_the_same_file_lists_yesterdays_captures(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    first = Store(path)
    exs = [make(i, body=b"\x00body") for i in range(5)]
    first.put_many(exs)
    first.close()
    again = Store(path)
    assert again.ids() == [e.id for e in exs]
    assert again.get(exs[3].id) == exs[3]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_default_path_follows_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert db_path() == tmp_path / "state" / "devtunnel" / "captures.db"
    store = Store()
    store.put(make(1))
    assert (tmp_path / "state" / "devtunnel" / "captures.db").is_file()


def test_threads_read_and_write_concurrently(store: Store) -> None:
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(20):
                store.put_many([make(k * 100 + i), make(k * 100 + i + 50)])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(40):
                store.rows("status:200", limit=10)
                store.count()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert store.count() == 120


def test_readonly_store_reads_but_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    Store(path).put(make(1))
    ro = Store(path, readonly=True)
    assert ro.count() == 1
    with pytest.raises(StoreError, match="read-only"):
        ro.put(make(2))
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "missing.db", readonly=True)


# --- large bodies and the version 1 layout -------------------------------------------------------

V1_DELETE_TRIGGER = re.search(r"CREATE TRIGGER exchanges_delete .*?END;", _SCHEMA_V1, re.S).group(0)  # type: ignore[union-attr]
LARGE = bytes(range(256)) * 2048  # 512 KiB: written through incremental blob I/O


def large_pair() -> tuple[Exchange, Exchange]:
    upload = make(1, body=LARGE + b"needleup")
    download = replace(make(2), response=Response(status=200, body=b"needledown" + LARGE,
                                                  body_size=len(LARGE) + 11))
    return upload, download


def test_large_bodies_of_either_side_round_trip_filter_and_go_with_their_exchange(store: Store) -> None:
    upload, download = large_pair()
    store.put_many([upload, download, make(3, body=b"small")])
    assert store.get(upload.id) == upload and store.get(download.id) == download
    assert store.ids("body:needleup") == [upload.id]
    assert store.ids("res.body:needledown") == [download.id]
    store.delete([upload.id, download.id])
    conn = store._conn()
    assert conn.execute("SELECT count(*) FROM req_bodies").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM res_bodies").fetchone()[0] == 1  # the small one's "ok"


def test_a_newer_version_without_a_response_leaves_no_response_body(store: Store) -> None:
    ex = make(1)
    store.put(ex)
    store.put(replace(ex, response=None))
    assert store.get(ex.id).response is None
    assert store.ids("res.body:ok") == []


def test_a_reader_that_may_not_write_an_old_file_says_so_and_leaves_it(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    first = Store(path)
    first.put(make(1))
    first.close()
    with sqlite3.connect(path) as conn:
        conn.executescript(TO_SCHEMA_8 + "PRAGMA user_version = 8;")
    # A file of another user's (the tests may run as root, whom no permission bit stops).
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: not mode & os.W_OK)
    with pytest.raises(StoreError, match=r"older devtunnel \(schema 8\) and needs an upgrade to schema \d+, "
                                         r"which this user cannot write; fix its permissions or pass --db"):
        Store(path, readonly=True).count()
    monkeypatch.undo()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 8


def test_a_version_2_file_is_upgraded_and_its_replays_read_as_not_edited(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    plain, edited = make(1), make(2)
    plain.replay_of = edited.replay_of = make(0).id
    edited.edited = True
    first = Store(path)
    first.put(plain)
    first.close()
    with sqlite3.connect(path) as conn:  # back to the layout of schema 2
        conn.executescript(TO_SCHEMA_3 + "ALTER TABLE exchanges DROP COLUMN edited; PRAGMA user_version = 2;")
    reader = Store(path, readonly=True)  # a reader first (devtunnel requests after an upgrade): it upgrades the file
    assert reader.count() == 1 and reader.rows()[0].edited is False
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    reader.close()
    again = Store(path)
    assert again.get(plain.id) == plain and again.rows()[0].edited is False
    again.put(edited)
    assert [r.edited for r in again.rows()] == [False, True]
    assert again.get(edited.id).edited is True
    again.close()


def test_a_version_1_file_is_upgraded_with_every_body_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "old.db"
    upload, download = large_pair()
    pending = make(3, status=None, body=b"no answer yet")
    first = Store(path)
    first.put_many([upload, download, pending])
    first.close()
    with sqlite3.connect(path) as conn:  # back to the layout of schema 1
        conn.executescript(TO_SCHEMA_3 + """
            DROP VIEW bodies;
            CREATE TABLE bodies (id TEXT PRIMARY KEY, req BLOB NOT NULL, res BLOB);
            INSERT INTO bodies SELECT q.id, q.body, s.body FROM req_bodies q LEFT JOIN res_bodies s ON s.id = q.id;
            DROP TABLE req_bodies;
            DROP TABLE res_bodies;
            DROP TRIGGER exchanges_delete;
            ALTER TABLE exchanges DROP COLUMN edited;
            PRAGMA user_version = 1;
        """ + V1_DELETE_TRIGGER)
    again = Store(path)
    assert [again.get(ex.id) for ex in (upload, download, pending)] == [upload, download, pending]
    assert f"{path}: upgrading the capture database from schema 1 to {SCHEMA_VERSION}" in caplog.text
    assert again.ids("body:needleup") == [upload.id]
    again.delete([download.id])
    assert again.count() == 2
    again.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT id FROM res_bodies").fetchall() == [(upload.id,)]  # the download's went


def test_a_version_4_file_gains_the_rule_columns_and_rule_filters_run_in_sql(tmp_path: Path) -> None:
    from devtunnel.capture.filters import parse
    from devtunnel.capture.model import RuleMark

    path = tmp_path / "v4.db"
    plain = make(1)
    first = Store(path)
    first.put(plain)
    first.close()
    with sqlite3.connect(path) as conn:  # back to the layout of schema 4
        conn.executescript(TO_SCHEMA_7 + "ALTER TABLE exchanges DROP COLUMN resigned; ALTER TABLE exchanges DROP COLUMN rule_index;"
                           " ALTER TABLE exchanges DROP COLUMN rule_action; ALTER TABLE exchanges DROP COLUMN rule_scope;"
                           " PRAGMA user_version = 4;")
    again = Store(path)
    assert again.get(plain.id) == plain and again.rows()[0].rule is None
    limited = make(1, status=429)
    limited.rule = RuleMark(3, "rate-limit")
    limited.remote_addr = "10.1.2.3"
    relayed = make(1, status=403)
    relayed.rule = RuleMark(1, "deny", "relay")
    relayed.remote_addr = "2001:db8::7"
    again.put_many([limited, relayed])
    assert again.get(limited.id).rule == RuleMark(3, "rate-limit")
    assert again.get(relayed.id).rule == RuleMark(1, "deny", "relay")
    for expression, wanted in [
        ("rule", {limited.id, relayed.id}),
        ("rule:rate-limit", {limited.id}),
        ("rule:3", {limited.id}),
        ("-rule", {plain.id}),
        ("ip:10.0.0.0/8", {limited.id}),
        ("ip:2001:db8::/32,192.0.2.1", {relayed.id}),
        ("-ip:10.0.0.0/8 rule", {relayed.id}),
    ]:
        assert set(again.ids(expression)) == wanted, expression
        assert {ex.id for ex in again.query() if parse(expression)(ex)} == wanted  # the Python twin agrees
    again.close()


def test_none_and_bytes_bind_as_they_are_through_the_identity_adapters(store: Store) -> None:
    import devtunnel.capture.rows  # noqa: F401  (registers the adapters)

    blob = b"\x00\xffraw"
    assert sqlite3.adapt(blob) is blob and sqlite3.adapt(None) is None
    conn = store._conn()
    assert conn.execute("SELECT typeof(?), typeof(?), ?", (None, blob, blob)).fetchone() == ("null", "blob", blob)

    class Tagged(bytes):
        pass

    assert conn.execute("SELECT typeof(?)", (Tagged(b"t"),)).fetchone() == ("blob",)  # a subclass binds as before


def test_look_moves_when_another_connection_ends_an_exchange_though_the_count_does_not(tmp_path: Path) -> None:
    db = tmp_path / "captures.db"
    writer = Store(db)
    reader = Store(db, readonly=True)
    try:
        flying = make_exchange("GET", "/slow", [], b"", None, duration=None)
        writer.put(flying)
        count, version = reader.look()
        assert count == 1
        reader.count(), reader.rows_by_id([flying.id])  # its own reads move nothing
        assert reader.look() == (1, version)
        writer.put(replace(flying, response=make_response(504, [], b""), duration=30.0))
        count, later = reader.look()
        assert count == 1 and later != version
    finally:
        reader.close()
        writer.close()
