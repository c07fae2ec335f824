"""How the store writes: new ids take plain inserts, stored ones are updated without leftovers, and the
counts in ``stats`` stay exact through rewrites, deletes, retention, other writers and the schema 7 upgrade."""

from __future__ import annotations

import gc
import os
import random
import sqlite3
import tempfile
import time
import weakref
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtunnel.capture.model import Exchange, Response, WsMessage, new_id
from devtunnel.capture.rows import FULL_COLUMNS
from devtunnel.capture.runs import this_run
from devtunnel.capture.schema import SCHEMA_VERSION
from devtunnel.capture.store import BLOBS_PER_CONNECTION, Store
from tests.capture.strategies import exchanges, small_exchanges
from tests.capture.test_store_webhooks import TO_SCHEMA_7
from tests.kit.exchanges import make_exchange, make_response

_CHILD_TABLES = ("heads", "req_bodies", "res_bodies", "ws_messages")
_ALL_COLUMNS = [c.strip() for c in FULL_COLUMNS.split(",")] + ["path", "bytes"]


def get(n: int = 0, *, ex_id: str | None = None, body: bytes = b"", response: bool = True) -> Exchange:
    res = make_response(200, [("Content-Type", "application/json")], b'{"n": %d}' % n) if response else None
    return make_exchange("GET" if not body else "POST", f"/items/{n}", [("Host", "a.localhost"), ("Accept", "*/*")],
                         body, res, id=ex_id or new_id(), tunnel="web", started_at=time.time(),
                         duration=0.01 if response else None)


def assert_consistent(store: Store) -> None:
    """``stats`` says what the tables hold, and no table holds rows of an exchange that is gone."""
    conn = sqlite3.connect(store.path)
    try:
        n, total = conn.execute("SELECT n, bytes FROM stats").fetchone()
        assert (n, total) == conn.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM exchanges").fetchone()
        for table in _CHILD_TABLES:
            orphans = conn.execute(f"SELECT count(*) FROM {table} WHERE id NOT IN (SELECT id FROM exchanges)")
            assert orphans.fetchone()[0] == 0, table
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "captures.db")
    yield s
    s.close()


def test_new_exchanges_take_plain_inserts_and_an_empty_request_body_has_no_row(store: Store) -> None:
    store.put(get(0))
    statements: list[str] = []
    store._conn().set_trace_callback(statements.append)
    try:
        store.put_many([get(n) for n in range(1, 6)])
    finally:
        store._conn().set_trace_callback(None)
    writes = [s.split(" VALUES")[0].split(" WHERE")[0] for s in statements
              if s.startswith(("INSERT", "DELETE", "UPDATE"))]
    assert not any(s.startswith("DELETE") for s in writes), writes  # nothing older to remove
    assert not any("ON CONFLICT" in s for s in statements)
    assert not any("req_bodies" in s for s in writes), writes
    assert store.get(store.ids()[-1]).request.body == b""
    conn = store._conn()
    assert conn.execute("SELECT count(*) FROM req_bodies").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM bodies WHERE req = x''").fetchone()[0] == 6
    assert_consistent(store)


def test_an_exchange_written_live_then_finished_keeps_one_row_with_the_final_values(store: Store) -> None:
    live = get(1, body=b"partial upload", response=False)
    store.put(live)
    store.put_many([get(n) for n in range(2, 4)])  # later ids in between: the final one is below the largest
    final = replace(live, request=replace(live.request, body=b"partial upload, and the rest"),
                    response=Response(status=201, body=b"made", body_size=4), duration=0.7)
    store.put(final)
    assert store.count() == 3
    assert store.get(live.id) == final
    assert store.ids("body:rest") == [live.id]
    assert_consistent(store)
    # ... and a newer version without a body or a response leaves neither behind
    bare = replace(final, request=replace(final.request, body=b"", body_size=0), response=None)
    store.put(bare)
    assert store.get(live.id) == bare
    assert store.ids("body:partial") == [] and store.ids("res.body:made") == []
    conn = store._conn()
    assert conn.execute("SELECT count(*) FROM req_bodies WHERE id = ?", (live.id,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM res_bodies WHERE id = ?", (live.id,)).fetchone()[0] == 0
    assert_consistent(store)


def test_a_websocket_exchange_written_again_drops_the_messages_its_new_version_has_not(store: Store) -> None:
    ws = get(1)
    ws.websocket = True
    ws.ws_messages = [WsMessage("client", 1, 1.0, b"a"), WsMessage("server", 1, 2.0, b"b"),
                      WsMessage("client", 2, 3.0, b"c")]
    store.put(ws)
    store.put(get(2))
    fewer = replace(ws, ws_messages=[WsMessage("client", 1, 1.0, b"A")], ws_close_code=1000)
    store.put(fewer)
    assert store.get(ws.id).ws_messages == fewer.ws_messages
    assert_consistent(store)


def test_an_exchange_that_began_before_one_stored_is_inserted_and_counted(store: Store) -> None:
    early, late = new_id(), new_id()
    store.put(get(2, ex_id=late))
    store.put(get(1, ex_id=early))
    assert store.ids() == [early, late] and store.count() == 2
    assert_consistent(store)


def test_another_process_writing_the_same_ids_keeps_one_row_each_and_the_counts(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    a, b = Store(path), Store(path)
    first = get(1, response=False)
    a.put(first)
    b.put_many([replace(first, response=make_response(200, body=b"done"), duration=0.2), get(2)])
    a.put_many([get(3), replace(first, response=make_response(500, body=b"later"), duration=0.3)])
    assert a.count() == b.count() == 3
    assert b.get(first.id).status == 500 and b.get(first.id).response.body == b"later"  # type: ignore[union-attr]
    assert_consistent(a)
    a.close()
    b.close()


@pytest.mark.parametrize("seed", range(6))
def test_the_counts_stay_exact_through_any_mix_of_writes_deletes_and_retention(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = Store(tmp_path / "c.db", max_exchanges=rng.choice([15, 40, 1000]),
                  max_bytes=rng.choice([6_000, 20_000, 10**9]))
    live: list[Exchange] = []
    for _ in range(40):
        batch: list[Exchange] = []
        for _ in range(rng.randrange(1, 12)):
            roll = rng.random()
            if live and roll < 0.3:  # a live exchange finishes (maybe after retention took it)
                ex = live.pop(rng.randrange(len(live)))
                batch.append(replace(ex, response=make_response(200, body=b"x" * rng.randrange(0, 900)),
                                     duration=0.5))
            else:
                ex = get(rng.randrange(1000), body=b"y" * rng.choice([0, 0, 10, 700]), response=roll > 0.5)
                if ex.response is None:
                    live.append(ex)
                if rng.random() < 0.2:
                    ex.websocket = True
                    ex.ws_messages = [WsMessage("client", 1, 1.0, b"m" * rng.randrange(50)) for _ in range(3)]
                batch.append(ex)
        rng.shuffle(batch)  # ids out of order within a batch
        store.put_many(batch)
        if rng.random() < 0.2 and store.count():
            ids = store.ids()
            store.delete(rng.sample(ids, min(len(ids), 3)) + ["nope"])
        assert_consistent(store)
        assert store.count() <= store.max_exchanges and store.total_bytes() <= max(store.max_bytes, 0) + 2_000
    store.clear()
    assert store.count() == 0 and store.total_bytes() == 0
    assert_consistent(store)
    store.close()


@pytest.mark.parametrize("seed", range(4))
def test_the_counts_write_exchanges_returns_are_what_stats_then_holds(tmp_path: Path, seed: int) -> None:
    """Retention decides on the counts the writes worked out (read with the largest id before them,
    moved by what they added); they are held here to the ``stats`` row read after the writes."""
    from devtunnel.capture.rows import write_exchanges

    rng = random.Random(seed)
    store = Store(tmp_path / "c.db", max_exchanges=10**9)
    conn = store._conn()
    written: list[Exchange] = []
    for _ in range(25):
        batch = [get(rng.randrange(1000), body=b"y" * rng.choice([0, 10, 700]), response=rng.random() > 0.3)
                 for _ in range(rng.randrange(0, 8))]
        for ex in rng.sample(written, min(len(written), rng.choice([0, 0, 1, 3]))):  # stored ones again
            batch.append(replace(ex, response=make_response(200, body=b"x" * rng.randrange(900)), duration=0.5))
        if batch and rng.random() < 0.3:
            batch[0].websocket = True
            batch[0].ws_messages = [WsMessage("client", 1, 1.0, b"m" * rng.randrange(50))]
        conn.execute("BEGIN IMMEDIATE")
        n, total, _ = write_exchanges(conn, batch)
        assert (n, total) == conn.execute("SELECT n, bytes FROM stats").fetchone()
        conn.execute("COMMIT")
        written += batch
    assert_consistent(store)
    store.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="looks at the open files in /proc")
def test_a_batch_of_new_exchanges_keeps_no_statement_journal_in_a_temporary_file(store: Store) -> None:
    """Inserts of many rows that may abort copy every page they change to a statement journal, a
    temporary file past 64 KiB (SQLite names them ``etilqs_*`` and unlinks them at once); the
    writer's inserts never need one. Looked for while the statements run, from a progress handler."""
    store.put_many([get(n, body=b"x" * 1000) for n in range(300)])
    seen: set[str] = set()

    def look() -> int:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if "etilqs_" in target:
                seen.add(target)
        return 0

    store._conn().set_progress_handler(look, 200)
    try:
        store.put_many([get(n, body=b"y" * 2000) for n in range(256)])
    finally:
        store._conn().set_progress_handler(None, 0)
    assert store.count() == 556
    assert not seen


def test_a_version_7_file_is_upgraded_at_once_and_reads_and_counts_right(tmp_path: Path) -> None:
    path = tmp_path / "v7.db"
    plain, posted, pending = get(1), get(2, body=b"form=data"), get(3, response=False)
    first = Store(path)
    first.put_many([plain, posted, pending])
    first.close()
    with sqlite3.connect(path) as conn:  # back to the layout of schema 7: triggers, its view, empty body rows
        conn.executescript(TO_SCHEMA_7 + "PRAGMA user_version = 7;")
        assert conn.execute("SELECT count(*) FROM req_bodies").fetchone()[0] == 3
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    again = Store(path)
    assert [again.get(ex.id) for ex in (plain, posted, pending)] == [plain, posted, pending]
    assert again.ids("body:form") == [posted.id]
    assert again.ids("res.body:n") == [plain.id, posted.id]
    # written again, deleted, written anew, and cut by retention: the old empty rows go with their exchanges
    again.put(replace(pending, response=make_response(204), duration=0.1))
    again.put_many([get(4), get(5, body=b"more")])
    again.delete([plain.id])
    assert again.count() == 4
    assert_consistent(again)
    again.max_exchanges = 2
    again.put(get(6))
    assert again.count() == 2
    assert_consistent(again)
    again.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert triggers == {"exchanges_update"}
        assert conn.execute("PRAGMA page_count").fetchone()[0] <= pages + 8  # nothing was rewritten


def test_a_batch_mixing_plain_exchanges_and_ones_with_rare_columns_keeps_each_exactly(store: Store) -> None:
    from devtunnel.capture.model import RuleMark
    from devtunnel.webhooks import Signature, Verdict

    plain, failed, replay, hooked, ruled, ws = (get(n) for n in range(6))
    failed.error, failed.error_message = "local_refused", "connection refused"
    replay.replay_of, replay.resigned = plain.id, "stripe"
    hooked.webhook = Verdict("stripe", "invoice.paid", "evt_1", Signature.VALID, "")
    ruled.rule = RuleMark(2, "rate-limit", "relay")
    ws.websocket, ws.ws_close_code = True, 1000
    batch = [plain, failed, replay, hooked, ruled, ws]
    store.put_many(batch)
    assert [store.get(ex.id) for ex in batch] == batch
    assert store.ids("~e") == [failed.id] and store.ids("rule") == [ruled.id]
    assert_consistent(store)


def test_a_batch_of_hundreds_cut_into_statements_of_every_size_keeps_each_exchange(store: Store) -> None:
    """389 = 256 + 128 + 4 + 1 rows: each statement takes its own rows' values, none shifted."""
    batch = [get(n, body=b"b%d" % n if n % 3 else b"") for n in range(389)]
    for ex in batch[::50]:
        ex.error, ex.error_message = "local_refused", "refused"
    for ex in batch[1::40]:
        ex.websocket = True
        ex.ws_messages = [WsMessage("client", 1, 1.0, b"m%d" % i) for i in range(3)]
    store.put_many(batch)
    assert [store.get(ex.id) for ex in batch] == batch
    again = [replace(ex, response=make_response(201, body=b"again")) for ex in batch[::2]]
    store.put_many(again)
    assert [store.get(ex.id) for ex in again] == again
    assert store.count() == len(batch)
    assert_consistent(store)


# --- a plain exchange binds fewer values (``capture.rows._PLAIN_ROW``): held to the full binding ---

_TABLE_ROWS = {
    "exchanges": "SELECT * FROM exchanges WHERE id = ?",
    "exchanges_types": "SELECT " + ", ".join(f"typeof({c})" for c in _ALL_COLUMNS) + " FROM exchanges WHERE id = ?",
    "heads": "SELECT * FROM heads WHERE id = ?",
    "req_bodies": "SELECT id, body, typeof(body) FROM req_bodies WHERE id = ?",
    "res_bodies": "SELECT id, body, typeof(body) FROM res_bodies WHERE id = ?",
}


def _stored_rows(store: Store, ex_id: str) -> dict[str, list[tuple[object, ...]]]:
    conn = store._conn()
    return {name: conn.execute(sql, (ex_id,)).fetchall() for name, sql in _TABLE_ROWS.items()}


@st.composite
def plain_looking_exchanges(draw: st.DrawFn) -> Exchange:
    """Exchanges that mostly meet the plain row's conditions, with targets that test its SQL
    (``?``, NUL, ``%``, quotes), and now and then one that does not (non-ASCII, truncated, ...)."""
    ex = draw(exchanges() | small_exchanges())
    target = draw(st.binary(max_size=40) | st.text("/?a%=&'\"\x00\x7f ", max_size=30).map(str.encode)
                  | st.sampled_from([b"", b"?", b"/?", b"/a?b?c", b"/\x00?\x00", b"/\xff?x"]))
    request = replace(ex.request, target=target, body_truncated=draw(st.booleans()) and draw(st.booleans()))
    response = ex.response or make_response(draw(st.integers(0, 999)), body=draw(st.binary(max_size=50)))
    response = replace(response, body_truncated=draw(st.booleans()) and draw(st.booleans()))
    plain = draw(st.booleans())
    return replace(ex, request=request, response=response,
                   **({"error": None, "error_message": "", "replay_of": None, "edited": False, "resigned": None,
                       "websocket": False, "ws_messages": [], "ws_close_code": None, "webhook": None, "rule": None}
                      if plain else {}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plain_looking_exchanges(), min_size=1, max_size=5, unique_by=lambda ex: ex.id))
def test_a_plain_exchange_is_stored_exactly_as_when_every_column_is_bound(batch: list[Exchange]) -> None:
    # The same exchanges written new (plain ones take the short row) and written over an older
    # version of each (the upsert binds every column): every table holds the same values, of the same types.
    # The older version has no run: the newer one's is stored over it.
    with tempfile.TemporaryDirectory() as folder:
        new, again = Store(Path(folder) / "new.db"), Store(Path(folder) / "again.db")
        run = this_run()
        try:
            new.put_many(batch, run=run)
            again.put_many([replace(ex, tunnel="older", response=None, request=replace(ex.request, body=b"x"))
                            for ex in batch])
            again.put_many(batch, run=run)
            for ex in batch:
                assert _stored_rows(new, ex.id) == _stored_rows(again, ex.id)
                assert replace(new.get(ex.id), webhook=ex.webhook) == ex  # its duplicate_of is the store's
            assert_consistent(new)
            assert_consistent(again)
        finally:
            new.close()
            again.close()


def test_a_plain_get_takes_the_short_row_and_others_the_full_one(store: Store) -> None:
    plain, query, odd, ws = get(1), get(2), get(3), get(4)
    query.request.target = b"/items/2?page=3&q=%20x"
    odd.request.target = b"/caf\xc3\xa9"  # not ASCII: bound in full
    ws.websocket = True
    statements: list[str] = []
    store._conn().set_trace_callback(statements.append)
    try:
        store.put_many([plain, query, odd, ws])
    finally:
        store._conn().set_trace_callback(None)
    inserts = [s for s in statements if s.startswith("INSERT OR FAIL INTO exchange_rows")]
    assert len(inserts) == 2
    short = next(s for s in inserts if "CAST(" in s)
    assert short.count("CAST(") == 2 and plain.id in short and query.id in short
    assert odd.id not in short and ws.id not in short
    assert [store.get(ex.id) for ex in (plain, query, odd, ws)] == [plain, query, odd, ws]
    assert store.rows("path:/items/2")[0].target == "/items/2?page=3&q=%20x"
    assert_consistent(store)


def test_an_exchange_larger_than_the_store_is_kept_with_its_bodies_cut_to_fit(tmp_path: Path) -> None:
    # Before, retention deleted it with everything older: a store of 1 MiB was left empty by one
    # 3 MiB response, logged by the agent with an id that nothing could show.
    limit = 1024 * 1024
    store = Store(tmp_path / "c.db", max_bytes=limit)
    small = [get(n) for n in range(3)]
    store.put_many(small)
    upload = b"u" * (2 * limit)
    big = replace(get(9, body=upload), response=make_response(200, [("Content-Type", "text/plain")], b"r" * limit))
    store.put(big)
    stored = store.get(big.id)
    assert stored.request.body == upload[: len(stored.request.body)] and stored.request.body_truncated
    assert stored.request.body_size == 2 * limit
    assert stored.response is not None and stored.response.body == b"" and stored.response.body_truncated
    assert stored.response.body_size == limit
    assert store.total_bytes() <= limit
    assert limit - 64 * 1024 < store.total_bytes()  # cut to what fits, not further
    assert_consistent(store)
    # Within the limit, nothing is cut.
    fits = replace(get(10, body=b"f" * (limit // 4)), id=new_id())
    store.put(fits)
    assert store.get(fits.id).request.body == b"f" * (limit // 4)
    assert not store.get(fits.id).request.body_truncated
    store.close()


def _dead_weakrefs() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is weakref.ReferenceType and o() is None)


def test_large_bodies_written_all_day_leave_a_bounded_trace_on_the_writer(tmp_path: Path) -> None:
    """CPython's sqlite3 keeps a weak reference to every blob a connection opened, dead or not,
    until the connection closes (python/cpython#144424); the writer writes each body over 256
    KiB through a blob, so a long-running agent's writer grew with every large body recorded
    (about 250 a minute in a soak of uploads and downloads). Its connection is opened again
    after ``BLOBS_PER_CONNECTION`` blobs, which lets go of them."""
    store = Store(tmp_path / "c.db", max_bytes=8 * 2**20)
    body = b"x" * (256 * 1024 + 1)
    before = _dead_weakrefs()
    for start in range(0, 2 * BLOBS_PER_CONNECTION + 10, 10):
        store.put_many([get(start + k, body=body) for k in range(10)])
    assert _dead_weakrefs() - before <= BLOBS_PER_CONNECTION
    assert store.count() > 0 and store.get(store.ids()[-1]).request.body == body
    assert_consistent(store)
    store.close()
