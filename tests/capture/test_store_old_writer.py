"""A devtunnel of schema 7 still running on a file that a newer one upgrades under it.

The old process passed its schema check when it opened the file, so it goes on with schema 7's
statements: an upsert counted by the insert trigger, deletes whose trigger counted them out and
removed the other rows of the exchange. Schema 8 dropped both triggers (the store counts what it
writes), so whatever such a writer still does must be refused, never done uncounted. The other
direction, an old reader, must go on reading what the new writer writes.

``OldWriter`` and ``OLD_READS`` are schema 7's own SQL (``capture/rows.py`` and ``capture/store.py``
before f39433f), one exchange per statement.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from devtunnel.capture import schema
from devtunnel.capture.model import Exchange
from devtunnel.capture.rows import encode_headers
from devtunnel.capture.store import Store
from devtunnel.errors import StoreError
from tests.capture.test_store_webhooks import TO_SCHEMA_7
from tests.capture.test_store_writes import assert_consistent, get

_OLD_INSERT_COLUMNS = (
    "id", "tunnel", "started_at", "method", "target_text", "path", "host", "scheme", "status",
    "duration", "ttfb", "size", "error", "replay_of", "websocket", "has_response", "bytes",
    "target", "remote_addr", "target_url", "error_message", "ws_close_code", "req_version",
    "req_body_size", "req_truncated", "res_version", "res_reason", "res_body_size", "res_truncated",
    "edited", "rule_index", "rule_action", "rule_scope", "resigned",
    "wh_provider", "wh_event", "wh_delivery", "wh_signature", "wh_reason", "wh_duplicate_of",
)
_OLD_UPSERT = (f"INSERT INTO exchanges ({', '.join(_OLD_INSERT_COLUMNS)}) VALUES "
               f"({', '.join('?' * len(_OLD_INSERT_COLUMNS))}) ON CONFLICT(id) DO UPDATE SET "
               + ", ".join(f"{c} = excluded.{c}" for c in _OLD_INSERT_COLUMNS[1:]))
_OLD_BASE_COLUMNS = "id, tunnel, started_at, method, target_text, host, status, duration, size, error, replay_of, websocket"

OLD_READS = {
    "count": "SELECT n FROM stats",
    "page": f"SELECT {_OLD_BASE_COLUMNS} FROM exchanges e WHERE e.method = ? ORDER BY e.id ASC LIMIT ? OFFSET ?",
    "heads": "SELECT req, res FROM heads WHERE id = ?",
    "bodies": "SELECT req, res FROM bodies WHERE id = ?",
    "messages": "SELECT sender, opcode, time, size, payload FROM ws_messages WHERE id = ? ORDER BY seq",
}
"""What schema 7's store read for a list page, a count and one whole exchange."""


class OldWriter:
    """Schema 7's writer on its own connection: ``put``, ``delete`` and ``clear`` as it did them."""

    def __init__(self, path: Path, max_exchanges: int = 100_000) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        self.max_exchanges = max_exchanges

    def _write(self, *statements: tuple[str, tuple[object, ...]]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                self.conn.execute(sql, params)
            n = self.conn.execute("SELECT n, bytes FROM stats").fetchone()[0]
            if n > self.max_exchanges:  # schema 7's retention, counted out by the delete trigger
                self.conn.execute("DELETE FROM exchanges WHERE id IN (SELECT id FROM exchanges ORDER BY id LIMIT ?)",
                                  (n - self.max_exchanges,))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def put(self, ex: Exchange) -> None:
        req, res = ex.request, ex.response
        assert res is not None
        req_heads, res_heads = encode_headers(req.headers), encode_headers(res.headers)
        blob_bytes = len(req_heads) + len(req.body) + len(req.target) + len(res_heads) + len(res.body)
        row = (ex.id, ex.tunnel, ex.started_at, req.method, req.url_text, req.path, req.host, ex.scheme,
               ex.status, ex.duration, ex.ttfb, ex.size, None, None, 0, 1, 256 + blob_bytes, req.target,
               ex.remote_addr, ex.target_url, ex.error_message, None, req.http_version, req.body_size, 0,
               res.http_version, res.reason, res.body_size, 0, 0, None, None, None, None,
               None, None, None, None, None, None)
        self._write(
            (_OLD_UPSERT, row),
            ("INSERT OR REPLACE INTO heads (id, req, res) VALUES (?, ?, ?)", (ex.id, req_heads, res_heads)),
            ("INSERT OR REPLACE INTO req_bodies (id, body) VALUES (?, ?)", (ex.id, bytes(req.body))),
            ("INSERT OR REPLACE INTO res_bodies (id, body) VALUES (?, ?)", (ex.id, bytes(res.body))),
            ("DELETE FROM ws_messages WHERE id IN (?)", (ex.id,)),
        )

    def delete(self, ex_id: str) -> None:
        self._write(("DELETE FROM exchanges WHERE id IN (?)", (ex_id,)))

    def clear(self) -> None:
        self._write(*((f"DELETE FROM {table}", ()) for table in ("heads", "req_bodies", "res_bodies", "ws_messages")),
                    ("DELETE FROM exchanges", ()))

    def close(self) -> None:
        self.conn.close()


def schema_7_file(path: Path, exchanges: list[Exchange]) -> None:
    """A file as schema 7 left it, holding ``exchanges``."""
    store = Store(path)
    store.put_many(exchanges)
    store.close()
    with sqlite3.connect(path) as conn:
        conn.executescript(TO_SCHEMA_7 + "PRAGMA user_version = 7;")
    conn.close()


def test_an_old_devtunnel_writing_on_after_the_upgrade_can_never_leave_the_counts_wrong(tmp_path: Path) -> None:
    path = tmp_path / "captures.db"
    schema_7_file(path, [get(1), get(2), get(3)])
    old = OldWriter(path, max_exchanges=6)
    old.put(get(4))  # before the upgrade: counted by schema 7's trigger, its statements prepared
    new = Store(path, max_exchanges=6)
    assert new.count() == 4
    assert_consistent(new)
    outcomes = []
    for step in ("put", "put", "new", "delete", "put", "new", "clear", "new"):
        before = new.ids()
        try:
            if step == "put":
                ex = get(10 + len(outcomes))
                old.put(ex)
                assert ex.id in new.ids()
            elif step == "delete":
                old.delete(before[0])
                assert before[0] not in new.ids()
            elif step == "clear":
                old.clear()
                assert new.ids() == []
            else:
                new.put_many([get(20 + len(outcomes), body=b"x" * 100), get(30 + len(outcomes))])
            outcomes.append("written")
        except sqlite3.Error as exc:
            outcomes.append(str(exc))
            assert new.ids() == before  # refused: nothing of it was written
        # whatever the old writer did, the counts say what the tables hold
        assert_consistent(new)
        assert new.count() == len(new.ids())
    old.close()
    new.close()


def test_the_old_writer_is_refused_every_write_and_told_why(tmp_path: Path) -> None:
    path = tmp_path / "captures.db"
    schema_7_file(path, [get(1), get(2)])
    old = OldWriter(path)
    old.put(get(3))
    Store(path).close()  # the upgrade, by a newer devtunnel
    doomed = get(4)
    for write in (lambda: old.put(doomed), lambda: old.delete(doomed.id), old.clear):
        with pytest.raises(sqlite3.OperationalError, match="cannot modify exchanges because it is a view"):
            write()
    store = Store(path)
    assert store.count() == 3
    assert_consistent(store)
    old.close()
    store.close()


def test_an_old_reader_open_before_the_upgrade_reads_what_the_new_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "captures.db"
    first = get(1)
    schema_7_file(path, [first])
    reader = sqlite3.connect(path, isolation_level=None)
    assert reader.execute(OLD_READS["count"]).fetchone() == (1,)
    assert len(reader.execute(OLD_READS["page"], ("GET", 50, 0)).fetchall()) == 1
    store = Store(path)  # the upgrade, by a newer devtunnel
    later = [get(2), get(3, body=b"name=value"), get(4)]
    store.put_many(later)
    store.delete([first.id])
    assert reader.execute(OLD_READS["count"]).fetchone() == (3,)
    page = reader.execute(OLD_READS["page"], ("GET", 50, 0)).fetchall()
    assert [r[0] for r in page] == [later[0].id, later[2].id]
    for ex in later:
        assert ex.response is not None
        req_heads, res_heads = reader.execute(OLD_READS["heads"], (ex.id,)).fetchone()
        assert (req_heads, res_heads) == (encode_headers(ex.request.headers), encode_headers(ex.response.headers))
        assert reader.execute(OLD_READS["bodies"], (ex.id,)).fetchone() == (ex.request.body, ex.response.body)
        assert reader.execute(OLD_READS["messages"], (ex.id,)).fetchall() == []
    # the one read it cannot do: a page forced onto the old primary key by its name (docs/architecture.md)
    forced = OLD_READS["page"].replace("FROM exchanges e", "FROM exchanges e INDEXED BY sqlite_autoindex_exchanges_1")
    with pytest.raises(sqlite3.OperationalError, match="no such index"):
        reader.execute(forced, ("GET", 50, 0))
    reader.close()
    store.close()


def test_a_schema_7_devtunnel_started_after_the_upgrade_refuses_the_file(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "captures.db"
    schema_7_file(path, [get(1)])
    Store(path).close()
    with sqlite3.connect(path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    assert version > 7
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 7)  # schema 7's check, as it was
    with pytest.raises(StoreError, match=f"written by a newer devtunnel \\(schema {version}, this one reads 7\\)"):
        Store(path)
